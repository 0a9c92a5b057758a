use std::os::fd::AsFd;
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let n: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let mut t = [0u128; 6];
    let rounds: usize = std::env::var("ROUNDS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(200);
    let mut keep = Vec::new();
    for r in 0..rounds {
        if std::env::var("SLEEP").is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(
                std::env::var("SLEEP").unwrap().parse().unwrap(),
            ));
        }
        let t0 = Instant::now();
        let c = luo::Client::connect_to(&path).unwrap();
        if std::env::var("STATUS").is_ok() {
            c.status().unwrap();
        }
        let t1 = Instant::now();
        let name = format!("m{r}");
        let s = c.create_session(&name).unwrap();
        let t2 = Instant::now();
        let fds: Vec<_> = (0..n)
            .map(|_| luo_sys::memfd_create("x", 0).unwrap())
            .collect();
        let files: Vec<(u64, std::os::fd::BorrowedFd<'_>)> =
            fds.iter().zip(1..).map(|(f, t)| (t, f.as_fd())).collect();
        let t2b = Instant::now();
        if n > 0 {
            s.preserve_batch(&files).unwrap();
        }
        let t3 = Instant::now();
        s.handover().unwrap();
        let t4 = Instant::now();
        drop(s);
        let s = c.retrieve_session(&name).unwrap();
        let t5 = Instant::now();
        s.finish().unwrap();
        let t6 = Instant::now();
        if std::env::var("KEEP").is_ok() {
            keep.push(fds);
        }
        if r >= 5 {
            t[0] += (t1 - t0).as_nanos();
            t[1] += (t2 - t1).as_nanos();
            t[2] += (t3 - t2b).as_nanos();
            t[3] += (t4 - t3).as_nanos();
            t[4] += (t5 - t4).as_nanos();
            t[5] += (t6 - t5).as_nanos();
        }
    }
    let k = (rounds - 5) as u128;
    println!(
        "connect {} create {} preserve {} handover {} retrieve_session {} finish {} (us)",
        t[0] / k / 1000,
        t[1] / k / 1000,
        t[2] / k / 1000,
        t[3] / k / 1000,
        t[4] / k / 1000,
        t[5] / k / 1000
    );
}
