# Checks flake.lock against flake.nix in plain Nix (no nixpkgs, no network), for CI machines that
# cannot fetch the inputs: every input of flake.nix is locked and nothing else is, each lock node's
# `original` is the input's URL, and each is pinned to a full revision with a NAR hash. Evaluates
# to the pins (name, rev, narHash) or fails with the reason.
#   nix-instantiate --eval --strict --json nix/lock-check.nix
let
  inherit (builtins)
    attrNames
    elemAt
    match
    sort
    lessThan
    ;
  flake = import ../flake.nix;
  lock = builtins.fromJSON (builtins.readFile ../flake.lock);
  inputs = attrNames flake.inputs;
  rootInputs = lock.nodes.${lock.root}.inputs;

  pin =
    name:
    let
      url = flake.inputs.${name}.url;
      m = match "github:([^/]+)/([^/?]+)(/([^?]+))?" url;
      node = lock.nodes.${rootInputs.${name}};
      original = {
        type = "github";
        owner = elemAt m 0;
        repo = elemAt m 1;
      }
      // (if elemAt m 3 == null then { } else { ref = elemAt m 3; });
      fail = reason: throw "flake.lock: input ${name} (${url}): ${reason}";
    in
    if m == null then
      fail "only github: inputs are checked"
    else if node.original != original then
      fail "original is ${builtins.toJSON node.original}, flake.nix says ${builtins.toJSON original}"
    else if node.locked.type != "github" || node.locked.owner != original.owner || node.locked.repo != original.repo then
      fail "locked to ${node.locked.owner or "?"}/${node.locked.repo or "?"}"
    else if match "[0-9a-f]{40}" node.locked.rev == null then
      fail "rev ${node.locked.rev or "(none)"} is not a full commit"
    else if match "sha256-[A-Za-z0-9+/]{43}=" node.locked.narHash == null then
      fail "narHash ${node.locked.narHash or "(none)"} is not a sha256 SRI hash"
    else if !(node ? locked.lastModified) then
      fail "no lastModified"
    else
      {
        inherit name;
        inherit (node.locked) rev narHash lastModified;
      };
in
if lock.version != 7 then
  throw "flake.lock: version ${toString lock.version}, expected 7"
else if attrNames rootInputs != inputs then
  throw "flake.lock: root inputs ${builtins.toJSON (attrNames rootInputs)}, flake.nix has ${builtins.toJSON inputs}"
else if attrNames lock.nodes != sort lessThan (inputs ++ [ lock.root ]) then
  throw "flake.lock: nodes ${builtins.toJSON (attrNames lock.nodes)}: some are not inputs of flake.nix"
else
  map pin inputs
