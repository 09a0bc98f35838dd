//! A tokio/reqwest client for proxify's event-loop tests (issue 11).
//!
//! evloop echo HOST PORT current|multi        one connect + echo round trip ("echo-ok")
//! evloop many HOST PORT N                    one connect, then N concurrent connects + echo:
//!                                            prints "one=SECS many=SECS"
//! evloop get URL blocking|async              reqwest GET, prints the body
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

async fn echo_once(host: &str, port: u16, tag: &str) -> Result<(), String> {
    let mut s = tokio::time::timeout(LIMIT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let msg = format!("evloop-{tag}\n");
    s.write_all(msg.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(LIMIT, s.read_exact(&mut got))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if got != msg.as_bytes() {
        return Err(format!("echo returned {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

fn runtime(kind: &str) -> tokio::runtime::Runtime {
    match kind {
        "current" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .expect("runtime")
}

fn fail(msg: String) -> ! {
    eprintln!("evloop: {msg}");
    std::process::exit(1)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_else(|| fail(format!("missing argument {i}")));
    match arg(1).as_str() {
        "echo" => {
            let (host, port) = (arg(2), arg(3).parse().unwrap());
            let rt = runtime(&arg(4));
            rt.block_on(echo_once(&host, port, "echo")).unwrap_or_else(|e| fail(e));
            println!("echo-ok");
        }
        "many" => {
            let (host, port) = (arg(2), arg(3).parse::<u16>().unwrap());
            let n: usize = arg(4).parse().unwrap();
            let rt = runtime("multi");
            rt.block_on(async {
                let t = Instant::now();
                echo_once(&host, port, "one").await.unwrap_or_else(|e| fail(e));
                let one = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let mut tasks = Vec::new();
                for i in 0..n {
                    let h = host.clone();
                    tasks.push(tokio::spawn(async move { echo_once(&h, port, &i.to_string()).await }));
                }
                let mut bad = 0;
                for t in tasks {
                    if let Err(e) = t.await.unwrap() {
                        eprintln!("evloop: {e}");
                        bad += 1;
                    }
                }
                let many = t.elapsed().as_secs_f64();
                if bad > 0 {
                    fail(format!("{bad} of {n} connects failed"));
                }
                println!("one={one:.4} many={many:.4}");
            });
        }
        "get" => {
            let url = arg(2);
            let body = if arg(3) == "blocking" {
                reqwest::blocking::Client::builder()
                    .timeout(LIMIT)
                    .build()
                    .and_then(|c| c.get(&url).send())
                    .and_then(|r| r.error_for_status())
                    .and_then(|r| r.text())
                    .unwrap_or_else(|e| fail(format!("GET {url}: {e}")))
            } else {
                runtime("multi").block_on(async {
                    let c = reqwest::Client::builder().timeout(LIMIT).build().unwrap();
                    match c.get(&url).send().await.and_then(|r| r.error_for_status()) {
                        Ok(r) => r.text().await.unwrap_or_else(|e| fail(format!("body: {e}"))),
                        Err(e) => fail(format!("GET {url}: {e}")),
                    }
                })
            };
            print!("{body}");
        }
        other => fail(format!("unknown command {other}")),
    }
}
