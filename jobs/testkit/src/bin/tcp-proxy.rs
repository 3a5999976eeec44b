//! `tcp-proxy LISTEN_PORT UPSTREAM_PORT STATS_FILE`: the testkit's counting proxy as a
//! process, for shell benchmarks. Rewrites STATS_FILE every 100 ms with
//! `downstream upstream connections`, until killed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sts_backup_testkit::proxy::{Faults, Proxy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, stats] = args.as_slice() else {
        eprintln!("usage: tcp-proxy LISTEN_PORT UPSTREAM_PORT STATS_FILE");
        std::process::exit(2);
    };
    let (Ok(listen), Ok(upstream)) = (listen.parse(), upstream.parse()) else {
        eprintln!("tcp-proxy: ports must be numbers");
        std::process::exit(2);
    };
    let proxy = Proxy::start_on(listen, upstream, Faults::default());
    loop {
        let c = &proxy.counters;
        let line = format!(
            "{} {} {}\n",
            c.downstream.load(Ordering::Relaxed),
            c.upstream.load(Ordering::Relaxed),
            c.connections.load(Ordering::Relaxed)
        );
        let tmp = format!("{stats}.tmp");
        if std::fs::write(&tmp, line)
            .and_then(|()| std::fs::rename(&tmp, stats))
            .is_err()
        {
            eprintln!("tcp-proxy: cannot write {stats}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
