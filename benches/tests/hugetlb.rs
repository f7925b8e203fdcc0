//! `fastpath-bench --hugetlb`: the ring region on reserved hugetlbfs pages
//! (raising `nr_hugepages` for the run when too few are free, putting it
//! back after), every scenario's result verified as in any run.

use std::process::Command;

const NR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

fn nr() -> String {
    std::fs::read_to_string(NR).unwrap_or_else(|e| panic!("{NR}: {e}"))
}

#[test]
fn hugetlb_run_verifies_and_restores_the_pool() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "--hugetlb reserves huge pages: run as root"
    );
    let before = nr();
    let out = Command::new(env!("CARGO_BIN_EXE_fastpath-bench"))
        .args([
            "--quick",
            "--flows",
            "1,1024",
            "--packets",
            "5000",
            "--hugetlb",
        ])
        .output()
        .expect("run fastpath-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fastpath-bench --hugetlb failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("hugetlbfs rings"), "{stdout}");
    assert!(!stderr.contains("BROKEN"), "{stderr}");
    assert_eq!(
        stderr.matches(" ok").count(),
        8,
        "every cell verified:\n{stderr}"
    );
    assert_eq!(nr(), before, "nr_hugepages not restored:\n{stderr}");

    let bad = Command::new(env!("CARGO_BIN_EXE_fastpath-bench"))
        .args(["--hugetlb", "--thp"])
        .output()
        .expect("run fastpath-bench");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "--hugetlb --thp is a usage error"
    );
}
