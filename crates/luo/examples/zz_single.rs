use std::os::fd::AsFd;
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let n: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let c = luo::Client::connect_to(&path).unwrap();
    for r in 0..3 {
        let s = c.create_session(&format!("single{r}")).unwrap();
        let fds: Vec<_> = (0..n)
            .map(|_| luo_sys::memfd_create("x", 0).unwrap())
            .collect();
        let t = Instant::now();
        for (i, f) in fds.iter().enumerate() {
            s.preserve(i as u64 + 1, f.as_fd()).unwrap();
        }
        println!(
            "{:.2} us per preserve",
            t.elapsed().as_nanos() as f64 / n as f64 / 1000.0
        );
        drop(s);
    }
}
