//! The console's static files, compiled into the binary: htmx (vendored from its npm package,
//! `htmx.org` 2.0.11, BSD Zero Clause licence in `assets/htmx.LICENSE`) and the style sheet. No
//! file is fetched from anywhere else at run time.

/// htmx, minified as its package ships it.
pub const HTMX_JS: &[u8] = include_bytes!("../assets/htmx.min.js");
/// The version of the vendored htmx.
pub const HTMX_VERSION: &str = "2.0.11";
/// The console's style sheet (dark and light, narrow screens first).
pub const STYLE_CSS: &[u8] = include_bytes!("../assets/style.css");
/// htmx's configuration, given in a `<meta>` element (not a script): no inline indicator styles
/// (the Content-Security-Policy forbids them), no `eval`, no script tags from answers, requests
/// only to the console itself.
pub const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true}"#;
