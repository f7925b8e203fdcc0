//! `tasctl run [--profile GOAL] [--exclude-ports LIST] -- CMD [ARGS...]`:
//! an unmodified program on TAS. Finds `libtas_preload.so`, checks that
//! tasd accepts apps at its attach socket, then executes CMD in tasctl's
//! place with the shim added to `LD_PRELOAD`, `TAS_SOCKET` set,
//! `TAS_EXCLUDE` extended and, with `--profile`, `TAS_PROFILE` (the
//! program's goal for its spin controller) set.
//! Every failure before the exec is one line and a distinct exit status.

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tas::exclude::{Exclude, EXCLUDE_ENV};
use tas_tune::PROFILE_ENV;

/// The shim's file name.
pub const SHIM: &str = "libtas_preload.so";

/// Exit statuses of `tasctl run` itself (otherwise CMD's own).
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NO_TASD: u8 = 3;
pub const EXIT_NO_SHIM: u8 = 4;
pub const EXIT_CANNOT_EXEC: u8 = 126;
pub const EXIT_NOT_FOUND: u8 = 127;

/// Where the shim may be for a tasctl at `exe`, in order: beside it (a
/// build tree, `target/release`), then `PREFIX/lib` for `PREFIX/bin/tasctl`
/// (what `tools/install.sh` lays out).
pub fn shim_candidates(exe: &Path) -> Vec<PathBuf> {
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let mut v = vec![dir.join(SHIM)];
    if let Some(prefix) = dir.parent() {
        v.push(prefix.join("lib").join(SHIM));
    }
    v
}

/// The first candidate that exists, or a one-line error naming where we
/// looked.
pub fn find_shim(exe: &Path) -> Result<PathBuf, String> {
    let c = shim_candidates(exe);
    if let Some(p) = c.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let dirs: Vec<String> = c
        .iter()
        .filter_map(|p| p.parent())
        .map(|d| d.display().to_string())
        .collect();
    Err(format!(
        "{SHIM} not found in {} (build it with `cargo build --release -p tas-preload`, or install with tools/install.sh)",
        if dirs.is_empty() {
            "tasctl's directory".to_string()
        } else {
            dirs.join(" or ")
        }
    ))
}

/// The attach socket apps use: `--socket`, else `$TAS_SOCKET`, else the
/// default; a control-socket path (`….ctl`) names its attach socket. Made
/// absolute, so CMD may change directory.
pub fn attach_socket(explicit: Option<&Path>) -> PathBuf {
    let p = tas_abi::socket_path(explicit);
    let p = if p.extension().is_some_and(|e| e == "ctl") {
        p.with_extension("")
    } else {
        p
    };
    if p.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(p);
        }
    }
    p
}

/// Whether tasd accepts apps at `path`: a connection to the attach socket
/// is opened and closed at once (tasd drops a connection that closes
/// without HELLO, silently). A full backlog counts as running.
pub fn check_tasd(path: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "cannot reach tasd at {}: {e} (is tasd running? start it, or point --socket or TAS_SOCKET at its socket)",
            path.display()
        )
    };
    let addr = UnixAddr::new(path).map_err(|e| fail(&e))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| fail(&e))?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
        Err(e) => Err(fail(&e)),
    }
}

/// `existing` with `add` appended (`sep` between), unless it is empty.
fn append(existing: Option<&OsStr>, add: &OsStr, sep: u8) -> OsString {
    match existing.filter(|e| !e.as_bytes().iter().all(u8::is_ascii_whitespace)) {
        None => add.to_owned(),
        Some(e) => {
            let mut v = e.as_bytes().to_vec();
            v.push(sep);
            v.extend_from_slice(add.as_bytes());
            OsString::from_vec(v)
        }
    }
}

/// The variables CMD gets: `LD_PRELOAD` (the shim appended to what is
/// there, once), `TAS_SOCKET`, and `TAS_EXCLUDE` extended by `exclude`.
pub fn child_env(
    shim: &Path,
    socket: &Path,
    exclude: Option<&str>,
    ld_preload: Option<&OsStr>,
    tas_exclude: Option<&OsStr>,
) -> Vec<(&'static str, OsString)> {
    // ld.so separates LD_PRELOAD entries by colons or blanks.
    let present = ld_preload.is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b':' || b.is_ascii_whitespace())
            .any(|e| e == shim.as_os_str().as_bytes())
    });
    let preload = if present {
        ld_preload.unwrap_or_default().to_owned()
    } else {
        append(ld_preload, shim.as_os_str(), b':')
    };
    let mut env = vec![
        ("LD_PRELOAD", preload),
        ("TAS_SOCKET", socket.as_os_str().to_owned()),
    ];
    if let Some(list) = exclude.filter(|l| !l.trim().is_empty()) {
        env.push((EXCLUDE_ENV, append(tas_exclude, OsStr::new(list), b',')));
    }
    env
}

/// Runs `tasctl run`: returns only when CMD was not started, with the exit
/// status and the one-line message to print.
pub fn run(
    socket: Option<&Path>,
    exclude: Option<&str>,
    profile: Option<&str>,
    cmd: &[OsString],
) -> (u8, String) {
    let profile = match profile.map(str::parse::<tas_tune::Goal>).transpose() {
        Ok(p) => p,
        Err(e) => return (EXIT_USAGE, format!("--profile: {e}")),
    };
    if let Some(list) = exclude {
        if let Some(e) = Exclude::parse(list).1.first() {
            return (EXIT_USAGE, format!("--exclude-ports: {e}"));
        }
    }
    let Some((prog, args)) = cmd.split_first() else {
        return (EXIT_USAGE, "run: no command given".to_string());
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return (EXIT_NO_SHIM, format!("cannot find tasctl's own path: {e}")),
    };
    let shim = match find_shim(&exe) {
        Ok(p) => p,
        Err(m) => return (EXIT_NO_SHIM, m),
    };
    let path = attach_socket(socket);
    if let Err(m) = check_tasd(&path) {
        return (EXIT_NO_TASD, m);
    }
    let env = child_env(
        &shim,
        &path,
        exclude,
        std::env::var_os("LD_PRELOAD").as_deref(),
        std::env::var_os(EXCLUDE_ENV).as_deref(),
    );
    let mut command = Command::new(prog);
    command.args(args).envs(env);
    if let Some(p) = profile {
        command.env(PROFILE_ENV, p.name());
    }
    let err = command.exec();
    let name = prog.to_string_lossy();
    let why = match err.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => err.to_string(),
    };
    match err.kind() {
        std::io::ErrorKind::NotFound => (EXIT_NOT_FOUND, format!("{name}: command not found")),
        _ => (EXIT_CANNOT_EXEC, format!("{name}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{bind, listen, Backlog};

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tasctl-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_shim_is_looked_for_beside_tasctl_then_in_the_prefix_lib() {
        let d = tmp("shim");
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::create_dir_all(d.join("lib")).unwrap();
        let exe = d.join("bin/tasctl");
        assert_eq!(
            shim_candidates(&exe),
            [d.join("bin").join(SHIM), d.join("lib").join(SHIM)]
        );
        let e = find_shim(&exe).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with(&format!(
                "{SHIM} not found in {} or {}",
                d.join("bin").display(),
                d.join("lib").display()
            )),
            "{e}"
        );
        std::fs::write(d.join("lib").join(SHIM), b"").unwrap();
        assert_eq!(find_shim(&exe).unwrap(), d.join("lib").join(SHIM));
        std::fs::write(d.join("bin").join(SHIM), b"").unwrap();
        assert_eq!(find_shim(&exe).unwrap(), d.join("bin").join(SHIM));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn tasd_is_reachable_only_while_something_listens() {
        let d = tmp("sock");
        let p = d.join("tasd.sock");
        let e = check_tasd(&p).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with(&format!("cannot reach tasd at {}: ENOENT", p.display())),
            "{e}"
        );
        let l = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(l.as_raw_fd(), &UnixAddr::new(&p).unwrap()).unwrap();
        listen(&l, Backlog::new(4).unwrap()).unwrap();
        assert_eq!(check_tasd(&p), Ok(()));
        // A socket file left behind by a dead daemon.
        drop(l);
        let e = check_tasd(&p).unwrap_err();
        assert!(e.contains("ECONNREFUSED"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_control_socket_path_names_its_attach_socket() {
        assert_eq!(
            attach_socket(Some(Path::new("/run/x/tasd.sock.ctl"))),
            PathBuf::from("/run/x/tasd.sock")
        );
        assert_eq!(
            attach_socket(Some(Path::new("/run/x/tasd.sock"))),
            PathBuf::from("/run/x/tasd.sock")
        );
        assert!(attach_socket(Some(Path::new("rel.sock"))).is_absolute());
    }

    #[test]
    fn the_environment_appends_and_never_duplicates() {
        let shim = Path::new("/opt/tas/lib/libtas_preload.so");
        let sock = Path::new("/run/tas/tasd.sock");
        let get = |env: &[(&str, OsString)], k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        let env = child_env(shim, sock, None, None, None);
        assert_eq!(
            get(&env, "LD_PRELOAD").as_deref(),
            Some("/opt/tas/lib/libtas_preload.so")
        );
        assert_eq!(
            get(&env, "TAS_SOCKET").as_deref(),
            Some("/run/tas/tasd.sock")
        );
        assert_eq!(get(&env, "TAS_EXCLUDE"), None);
        let env = child_env(
            shim,
            sock,
            Some("22,10.0.0.1"),
            Some(OsStr::new("libjemalloc.so.2")),
            Some(OsStr::new("6379")),
        );
        assert_eq!(
            get(&env, "LD_PRELOAD").as_deref(),
            Some("libjemalloc.so.2:/opt/tas/lib/libtas_preload.so")
        );
        assert_eq!(
            get(&env, "TAS_EXCLUDE").as_deref(),
            Some("6379,22,10.0.0.1")
        );
        // Already preloaded (blank-separated): left as it is.
        let env = child_env(
            shim,
            sock,
            Some(" "),
            Some(OsStr::new("/opt/tas/lib/libtas_preload.so libfoo.so")),
            None,
        );
        assert_eq!(
            get(&env, "LD_PRELOAD").as_deref(),
            Some("/opt/tas/lib/libtas_preload.so libfoo.so")
        );
        assert_eq!(get(&env, "TAS_EXCLUDE"), None);
        // An empty LD_PRELOAD is not an entry.
        let env = child_env(shim, sock, None, Some(OsStr::new("")), None);
        assert_eq!(
            get(&env, "LD_PRELOAD").as_deref(),
            Some("/opt/tas/lib/libtas_preload.so")
        );
    }

    #[test]
    fn a_bad_exclude_list_is_refused_before_anything_runs() {
        let (code, msg) = run(
            Some(Path::new("/nonexistent/tasd.sock")),
            Some("80,htp"),
            None,
            &[OsString::from("true")],
        );
        assert_eq!(code, EXIT_USAGE);
        assert_eq!(
            msg,
            "--exclude-ports: 'htp': not a port (1-65535), port range (LOW-HIGH), IPv4 address or address:port"
        );
    }
}
