//! The lab's real systemd (`tests/lab/systemd-user.sh up`): a unit to break, reached over the
//! lab's own bus. Found through `MACHA_LAB_SDUSER` (default `/run/macha-lab/sduser`).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

pub struct Lab {
    pub dir: PathBuf,
    pub address: String,
}

pub fn lab() -> Lab {
    let dir = PathBuf::from(std::env::var("MACHA_LAB_SDUSER").unwrap_or_else(|_| "/run/macha-lab/sduser".into()));
    let socket = dir.join("xdg/bus");
    assert!(
        socket.exists(),
        "the lab systemd is not running ({} does not exist): start it with `tests/lab/systemd-user.sh up`",
        socket.display()
    );
    Lab { address: format!("unix:path={}", socket.display()), dir }
}

impl Lab {
    fn busctl(&self, args: &[&str]) -> Output {
        Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("busctl: {e}"))
    }

    fn manager(&self, method: &str, sig: &str, args: &[&str]) -> Output {
        let mut a = vec![
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            method,
            sig,
        ];
        a.extend_from_slice(args);
        self.busctl(&a)
    }

    /// A service running `sleep infinity` that fails to start while its flag file exists
    /// ([`TestUnit::break_start`]); no shell involved.
    pub fn unit(&self, name: &str) -> TestUnit {
        self.unit_with(name, "")
    }

    /// A unit of any type with exactly this file content (`name` with its suffix); removed on drop.
    pub fn unit_file(&self, name: &str, content: &str) -> TestUnit {
        let file = self.dir.join(format!("home/.config/systemd/user/{name}"));
        std::fs::write(&file, content).unwrap_or_else(|e| panic!("{e}"));
        let out = self.manager("Reload", "", &[]);
        assert!(out.status.success(), "Reload: {}", String::from_utf8_lossy(&out.stderr));
        TestUnit {
            name: name.to_owned(),
            file,
            flag: self.dir.join(format!("home/{name}.fail")),
            lab: Lab { dir: self.dir.clone(), address: self.address.clone() },
        }
    }

    /// Like [`Lab::unit`], with extra `[Service]` lines.
    pub fn unit_with(&self, name: &str, extra: &str) -> TestUnit {
        let flag = self.dir.join(format!("home/{name}.fail"));
        let _ = std::fs::remove_file(&flag);
        let file = self.dir.join(format!("home/.config/systemd/user/{name}.service"));
        std::fs::write(
            &file,
            format!(
                "[Unit]\nDescription=macha test unit {name}\n[Service]\nExecStartPre=/usr/bin/test ! -e {}\n{extra}\nExecStart=/bin/sleep infinity\n",
                flag.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = self.manager("Reload", "", &[]);
        assert!(out.status.success(), "Reload: {}", String::from_utf8_lossy(&out.stderr));
        TestUnit {
            name: format!("{name}.service"),
            file,
            flag,
            lab: Lab { dir: self.dir.clone(), address: self.address.clone() },
        }
    }
}

pub struct TestUnit {
    pub name: String,
    file: PathBuf,
    flag: PathBuf,
    lab: Lab,
}

impl TestUnit {
    /// From now on the unit fails to start (its `ExecStartPre` check fails).
    pub fn break_start(&self) {
        std::fs::write(&self.flag, "x").unwrap_or_else(|e| panic!("{e}"));
    }
    pub fn start(&self) {
        let out = self.lab.manager("StartUnit", "ss", &[&self.name, "replace"]);
        assert!(out.status.success(), "StartUnit: {}", String::from_utf8_lossy(&out.stderr));
        super::daemon::wait_for("unit active", Duration::from_secs(30), || self.active_state() == "active");
    }
    /// Kills the main process (Restart=no: the unit stays failed).
    pub fn kill(&self) {
        let out = self.lab.manager("KillUnit", "ssi", &[&self.name, "main", "9"]);
        assert!(out.status.success(), "KillUnit: {}", String::from_utf8_lossy(&out.stderr));
    }
    pub fn active_state(&self) -> String {
        let path = self.lab.manager("LoadUnit", "s", &[&self.name]);
        let path = String::from_utf8_lossy(&path.stdout).trim().trim_start_matches("o ").trim_matches('"').to_owned();
        let out = self.lab.busctl(&[
            "get-property",
            "org.freedesktop.systemd1",
            &path,
            "org.freedesktop.systemd1.Unit",
            "ActiveState",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("s ").trim_matches('"').to_owned()
    }
}

impl Drop for TestUnit {
    fn drop(&mut self) {
        let _ = self.lab.manager("StopUnit", "ss", &[&self.name, "replace"]);
        let _ = self.lab.manager("ResetFailedUnit", "s", &[&self.name]);
        let _ = std::fs::remove_file(&self.flag);
        let _ = std::fs::remove_file(&self.file);
        let _ = self.lab.manager("Reload", "", &[]);
    }
}
