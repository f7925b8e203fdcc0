//! Echo client on the TAS low-level API: `echo_client IP PORT [COUNT] [SIZE]`
//! sends COUNT messages of SIZE bytes one at a time, checks each echo, and
//! prints the round-trip times.
use std::net::Ipv4Addr;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let ip: Ipv4Addr = args
        .next()
        .expect("usage: echo_client IP PORT [COUNT] [SIZE]")
        .parse()
        .expect("bad IP");
    let port: u16 = args.next().expect("PORT").parse().expect("bad PORT");
    let count: usize = args
        .next()
        .map(|s| s.parse().expect("bad COUNT"))
        .unwrap_or(1000);
    let size: usize = args
        .next()
        .map(|s| s.parse().expect("bad SIZE"))
        .unwrap_or(64);
    let mut tas = tas::Tas::attach()?;
    let c = tas.connect(ip, port)?;
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for i in 0..count {
        for (j, b) in msg.iter_mut().enumerate() {
            *b = (i + j) as u8;
        }
        let t = Instant::now();
        tas.send_all(c, &msg)?;
        let mut got = 0;
        while got < size {
            let n = tas.recv_blocking(c, &mut back[got..])?;
            if n == 0 {
                return Err(std::io::Error::other("server closed early"));
            }
            got += n;
        }
        rtts.push(t.elapsed());
        if back != msg {
            return Err(std::io::Error::other(format!("echo {i} differs")));
        }
    }
    tas.close(c)?;
    rtts.sort();
    let pct =
        |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "echo_client: {count} x {size} B ok; rtt p50 {:.1} us p99 {:.1} us",
        pct(0.5),
        pct(0.99)
    );
    // Let the close finish before exiting.
    let _ = tas.wait(Some(std::time::Duration::from_millis(50)));
    Ok(())
}
