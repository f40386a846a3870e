//! Reads a preloaded Redis stream through a consumer group (`XREADGROUP … COUNT 512`, then
//! `XACK` of the batch), the exporter's hot path, with one client crate, and prints one JSON
//! line: entries/s, CPU µs per entry and heap allocations per entry (a counting allocator).
//!
//! Usage: `redis-client-bench URL RECORDING ENTRIES RUNS` (built with `--features
//! use-redis` or `--features use-fred`). The stream `bench` is filled with ENTRIES entries
//! cycling through the recorded `data`/`attributes` fields of RECORDING (the real Prefect
//! stream recording), then read RUNS times, each through a fresh group.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 512;

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn recording(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("recording")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["data"].as_str().unwrap().to_owned(),
                v["attributes"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[cfg(feature = "use-redis")]
mod client {
    use bytes::Bytes;
    use redis::Value;

    pub const NAME: &str = "redis";
    pub type Conn = redis::aio::MultiplexedConnection;

    pub async fn connect(url: &str) -> Conn {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub async fn load(conn: &mut Conn, entries: &[(String, String)], n: usize) {
        let _: Value = redis::cmd("DEL").arg("bench").query_async(conn).await.unwrap();
        let mut done = 0;
        while done < n {
            let mut pipe = redis::pipe();
            for i in done..(done + 1000).min(n) {
                let (data, attributes) = &entries[i % entries.len()];
                pipe.cmd("XADD")
                    .arg("bench")
                    .arg("*")
                    .arg("data")
                    .arg(data)
                    .arg("attributes")
                    .arg(attributes)
                    .ignore();
            }
            let _: () = pipe.query_async(conn).await.unwrap();
            done = (done + 1000).min(n);
        }
    }

    pub async fn create_group(conn: &mut Conn, group: &str) {
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("bench")
            .arg(group)
            .arg("0")
            .query_async(conn)
            .await
            .unwrap();
    }

    /// One batch: the `data` fields as `Bytes`, acknowledged; returns (entries, bytes).
    pub async fn read_batch(conn: &mut Conn, group: &str, batch: usize) -> (usize, usize) {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("c")
            .arg("COUNT")
            .arg(batch)
            .arg("STREAMS")
            .arg("bench")
            .arg(">")
            .query_async(conn)
            .await
            .unwrap();
        let Value::Array(streams) = reply else { return (0, 0) };
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(batch);
        let mut bytes = 0;
        let mut n = 0;
        for stream in streams {
            let Value::Array(mut parts) = stream else { continue };
            let Some(Value::Array(entries)) = parts.pop() else { continue };
            for entry in entries {
                let Value::Array(mut entry) = entry else { continue };
                let Some(Value::Array(fields)) = entry.pop() else { continue };
                let Some(Value::BulkString(id)) = entry.pop() else { continue };
                let mut fields = fields.into_iter();
                while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                    if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
                        if k == b"data" {
                            let frame = Bytes::from(v);
                            bytes += frame.len();
                            n += 1;
                        }
                    }
                }
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            let _: i64 = redis::cmd("XACK")
                .arg("bench")
                .arg(group)
                .arg(&ids)
                .query_async(conn)
                .await
                .unwrap();
        }
        (n, bytes)
    }
}

#[cfg(feature = "use-fred")]
mod client {
    use fred::prelude::*;
    use fred::types::CustomCommand;

    pub const NAME: &str = "fred";
    pub type Conn = Client;

    pub async fn connect(url: &str) -> Conn {
        let client = Client::new(Config::from_url(url).unwrap(), None, None, None);
        client.init().await.unwrap();
        client
    }

    async fn raw(conn: &Conn, cmd: &'static str, args: Vec<Value>) -> Value {
        conn.custom(CustomCommand::new_static(cmd, None::<u16>, false), args)
            .await
            .unwrap()
    }

    pub async fn load(conn: &mut Conn, entries: &[(String, String)], n: usize) {
        let _ = raw(conn, "DEL", vec!["bench".into()]).await;
        let mut done = 0;
        while done < n {
            let pipe = conn.pipeline();
            for i in done..(done + 1000).min(n) {
                let (data, attributes) = &entries[i % entries.len()];
                let args: Vec<Value> = vec![
                    "bench".into(),
                    "*".into(),
                    "data".into(),
                    data.as_str().into(),
                    "attributes".into(),
                    attributes.as_str().into(),
                ];
                let _: Value = pipe
                    .custom(CustomCommand::new_static("XADD", None::<u16>, false), args)
                    .await
                    .unwrap();
            }
            let _: Vec<Value> = pipe.all().await.unwrap();
            done = (done + 1000).min(n);
        }
    }

    pub async fn create_group(conn: &mut Conn, group: &str) {
        let args = vec!["CREATE".into(), "bench".into(), group.into(), "0".into()];
        let _ = raw(conn, "XGROUP", args).await;
    }

    pub async fn read_batch(conn: &mut Conn, group: &str, batch: usize) -> (usize, usize) {
        let args: Vec<Value> = vec![
            "GROUP".into(),
            group.into(),
            "c".into(),
            "COUNT".into(),
            (batch as i64).into(),
            "STREAMS".into(),
            "bench".into(),
            ">".into(),
        ];
        let reply = raw(conn, "XREADGROUP", args).await;
        let Value::Array(streams) = reply else { return (0, 0) };
        let mut ids: Vec<Value> = Vec::with_capacity(batch);
        let mut bytes = 0;
        let mut n = 0;
        for stream in streams {
            let Value::Array(mut parts) = stream else { continue };
            let Some(Value::Array(entries)) = parts.pop() else { continue };
            for entry in entries {
                let Value::Array(mut entry) = entry else { continue };
                let Some(Value::Array(fields)) = entry.pop() else { continue };
                let Some(id) = entry.pop() else { continue };
                let mut fields = fields.into_iter();
                while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                    if k.as_bytes() == Some(b"data") {
                        if let Some(frame) = v.into_bytes() {
                            bytes += frame.len();
                            n += 1;
                        }
                    }
                }
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            let mut args: Vec<Value> = vec!["bench".into(), group.into()];
            args.extend(ids);
            let _ = raw(conn, "XACK", args).await;
        }
        (n, bytes)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, path, entries, runs] = &args[..] else {
        panic!("usage: redis-client-bench URL RECORDING ENTRIES RUNS");
    };
    let n: usize = entries.parse().unwrap();
    let runs: usize = runs.parse().unwrap();
    let recorded = recording(path);
    let mut conn = client::connect(url).await;
    client::load(&mut conn, &recorded, n).await;
    for run in 0..runs {
        let group = format!("g{run}");
        client::create_group(&mut conn, &group).await;
        let (cpu0, allocs0, t0) = (cpu_seconds(), ALLOCS.load(Ordering::Relaxed), Instant::now());
        let (mut got, mut bytes) = (0, 0);
        for _ in 0..(n / BATCH + 2) {
            let (k, b) = client::read_batch(&mut conn, &group, BATCH).await;
            if k == 0 {
                break;
            }
            got += k;
            bytes += b;
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
        assert_eq!(got, n, "every entry read once");
        println!(
            "{{\"client\":\"{}\",\"run\":{run},\"entries\":{got},\"bytes\":{bytes},\"seconds\":{secs:.4},\"entries_per_s\":{:.0},\"cpu_us_per_entry\":{:.3},\"allocs_per_entry\":{:.2}}}",
            client::NAME,
            got as f64 / secs,
            cpu * 1e6 / got as f64,
            allocs as f64 / got as f64
        );
    }
}
