//! Echo server on the TAS low-level API: echoes every byte back until the
//! client closes. `echo_server [PORT]` (default 7). Handles many connections
//! in one thread by polling them.
use std::collections::HashSet;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(7);
    let mut tas = tas::Tas::attach()?;
    let l = tas.listen(port, 512)?;
    println!("echo_server: listening on port {port}");
    let mut conns: HashSet<tas::ConnId> = HashSet::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut served = 0u64;
    loop {
        while let Some(c) = tas.try_accept(l)? {
            conns.insert(c);
            served += 1;
        }
        let mut done = Vec::new();
        let mut progress = false;
        for &c in &conns {
            let free = tas.conn(c).map(|s| s.tx_free() as usize).unwrap_or(0);
            if free == 0 {
                continue;
            }
            let want = free.min(buf.len());
            match tas.recv(c, &mut buf[..want]) {
                Ok(0) => done.push(c),
                Ok(n) => {
                    progress = true;
                    tas.send_all(c, &buf[..n])?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => done.push(c),
            }
        }
        for c in done {
            conns.remove(&c);
            let _ = tas.close(c);
        }
        if !progress {
            tas.wait(Some(Duration::from_millis(100)))?;
        }
        let _ = served;
    }
}
