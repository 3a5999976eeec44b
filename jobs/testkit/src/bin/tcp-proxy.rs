//! `tcp-proxy LISTEN_PORT UPSTREAM_PORT STATS_FILE [CUT_AFTER CUTS]`: the testkit's counting
//! proxy as a process, for shell benchmarks. Rewrites STATS_FILE every 100 ms with
//! `downstream upstream connections cuts`, until killed. With CUT_AFTER and CUTS it cuts
//! downloads: CUTS connections, each after CUT_AFTER bytes from the server. With
//! TCP_PROXY_RATE (bytes per second) each connection's download is throttled to it.
//! LISTEN_PORT 0 picks a free port; the port listened on is printed on stdout's first line.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sts_backup_testkit::proxy::{Faults, Proxy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, stats, cut) = match args.as_slice() {
        [l, u, s] => (l, u, s, None),
        [l, u, s, after, cuts] => (l, u, s, Some((after, cuts))),
        _ => usage(),
    };
    let (Ok(listen), Ok(upstream)) = (listen.parse(), upstream.parse()) else {
        usage()
    };
    let mut faults = match cut.map(|(after, cuts)| (after.parse(), cuts.parse())) {
        None => Faults::default(),
        Some((Ok(after), Ok(cuts))) => Faults {
            cut_after: Some(after),
            cuts,
            ..Faults::default()
        },
        Some(_) => usage(),
    };
    if let Ok(rate) = std::env::var("TCP_PROXY_RATE") {
        faults.rate = Some(rate.parse().unwrap_or_else(|_| usage()));
    }
    let proxy = Proxy::start_on(listen, upstream, faults);
    println!("{}", proxy.port);
    loop {
        let c = &proxy.counters;
        let line = format!(
            "{} {} {} {}\n",
            c.downstream.load(Ordering::Relaxed),
            c.upstream.load(Ordering::Relaxed),
            c.connections.load(Ordering::Relaxed),
            c.cut.load(Ordering::Relaxed)
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

fn usage() -> ! {
    eprintln!(
        "usage: [TCP_PROXY_RATE=BYTES_PER_S] tcp-proxy LISTEN_PORT UPSTREAM_PORT STATS_FILE [CUT_AFTER CUTS] (numbers)"
    );
    std::process::exit(2);
}
