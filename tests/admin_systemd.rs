//! sd_notify messages as systemd would receive them, on a datagram socket of our own.
//!
//! One test function on purpose: it sets process-wide environment variables
//! (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), which must not race with another test.

use std::time::Duration;

use idgate::systemd;
use tokio::net::UnixDatagram;

const PROMPTLY: Duration = Duration::from_secs(5);

async fn recv(sock: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PROMPTLY, sock.recv(&mut buf))
        .await
        .expect("a notification arrives")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[tokio::test]
async fn notifications_reach_the_notify_socket_and_are_noops_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);

    systemd::notify_ready();
    let msg = recv(&sock).await;
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");

    systemd::notify_reloading();
    let msg = recv(&sock).await;
    assert!(msg.lines().any(|l| l == "RELOADING=1"), "{msg:?}");
    let usec = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC for Type=notify-reload");
    assert!(usec.parse::<u64>().unwrap() > 0);

    systemd::notify_status("waiting for JWKS of corp");
    assert_eq!(recv(&sock).await, "STATUS=waiting for JWKS of corp\n");

    systemd::notify_stopping();
    let msg = recv(&sock).await;
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");

    // Watchdog: without WATCHDOG_USEC nothing is spawned.
    std::env::remove_var("WATCHDOG_USEC");
    assert!(systemd::spawn_watchdog().is_none());
    // A watchdog meant for another process (WATCHDOG_PID) is not ours.
    std::env::set_var("WATCHDOG_USEC", "40000");
    std::env::set_var("WATCHDOG_PID", "1");
    assert!(systemd::spawn_watchdog().is_none());
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    assert_eq!(
        systemd::watchdog_interval(),
        Some(Duration::from_millis(20)),
        "half of WATCHDOG_USEC"
    );
    let pinger = systemd::spawn_watchdog().expect("watchdog enabled");
    for _ in 0..2 {
        assert_eq!(recv(&sock).await, "WATCHDOG=1\n");
    }
    pinger.abort();
    let _ = pinger.await;
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    // Drain pings sent between the last recv and abort.
    let mut buf = [0u8; 64];
    while sock.try_recv(&mut buf).is_ok() {}

    // Without NOTIFY_SOCKET every call is a silent no-op.
    std::env::remove_var("NOTIFY_SOCKET");
    systemd::notify_ready();
    systemd::notify_stopping();
    assert!(
        sock.try_recv(&mut buf).is_err(),
        "nothing is sent without NOTIFY_SOCKET"
    );
}
