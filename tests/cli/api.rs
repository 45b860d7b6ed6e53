//! The daemon's HTTP API and its client commands, against a real `tend run` on a random
//! loopback port: probes, metrics (parsed with a real Prometheus parser), live state, SSE,
//! bad requests, and `tend status/graph/resources/exports`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::sandbox::{read, wait_for, Daemon, Sandbox, TEND};

const LIMIT: Duration = Duration::from_secs(20);

/// A free loopback port (bound then released; the daemon binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon under test with its API address.
struct Api {
    sb: Sandbox,
    d: Daemon,
    addr: String,
}

impl Api {
    /// Writes `graph` and starts `tend run` on it with `--listen` on a free port.
    fn start(graph: &str, extra: &[&str]) -> Api {
        Api::start_file("g.yaml", graph, extra)
    }

    /// As `start`, with the program in a file named `file` (`.yaml` or `.mcl`).
    fn start_file(file: &str, graph: &str, extra: &[&str]) -> Api {
        let sb = Sandbox::new();
        let g = sb.write(file, graph);
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--listen", &addr, "--hostname", "api-test-host"];
        args.extend_from_slice(extra);
        let d = sb.spawn_run(&g, &args);
        let api = Api { sb, d, addr };
        api.wait("the API to answer", |a| {
            a.try_get("/health/liveness").is_some_and(|r| r.0 == 200)
        });
        api
    }

    fn ctx(&self) -> String {
        self.sb.explain_daemon(&self.d)
    }

    fn wait(&self, what: &str, mut cond: impl FnMut(&Api) -> bool) {
        wait_for(what, LIMIT, || cond(self), || self.ctx());
    }

    /// One plain HTTP/1.0 GET: (status, content type, body), or `None` if nothing answers.
    fn try_get(&self, path: &str) -> Option<(u16, String, String)> {
        let mut s = TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(LIMIT)).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let ctype = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(String::from)
            })
            .unwrap_or_default();
        Some((status, ctype, body.to_string()))
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path}: no answer\n{}", self.ctx()))
    }

    /// GET, expecting `status` and a JSON body.
    fn json(&self, path: &str, status: u16) -> Json {
        let (code, ctype, body) = self.get(path);
        assert_eq!(code, status, "GET {path}: {body}\n{}", self.ctx());
        assert!(ctype.starts_with("application/json"), "GET {path}: {ctype}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Runs a client command against this daemon.
    fn client(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(TEND)
            .args(args)
            .args(["--addr", &self.addr])
            .env_remove("TEND_ADDR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn sse(&self, path: &str) -> Sse {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).unwrap();
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "GET {path}: {status}");
        let mut ctype = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            if l.to_ascii_lowercase().starts_with("content-type:") {
                ctype = l;
            }
        }
        assert!(ctype.contains("text/event-stream"), "GET {path}: {ctype}");
        Sse { r }
    }
}

/// A Server-Sent Events reader over a raw HTTP/1.0 connection.
struct Sse {
    r: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Ev {
    id: String,
    event: String,
    data: Json,
    at: Instant,
}

impl Sse {
    fn next(&mut self) -> Ev {
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).expect("reading the event stream");
            assert!(n > 0, "the event stream ended");
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| {
                    panic!("event {event} {id}: data is not JSON: {e}: {data}")
                });
                return Ev {
                    id,
                    event,
                    data,
                    at: Instant::now(),
                };
            }
            if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

const GRAPH: &str = r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/motd
      content: "hello\n"
"#;

/// A sample's value in a parsed scrape.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn scrape(api: &Api) -> prometheus_parse::Scrape {
    let (code, ctype, body) = api.get("/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{body}"))
}

#[test]
fn probes_flip_when_ready_and_report_a_failed_resource() {
    // `gate` blocks its first check until the test creates `go`; `bad` fails; `after` depends
    // on `bad` and is blocked.
    let api = Api::start(
        r#"
resources:
  exec:
    - name: gate
      cmd: /bin/sh
      args: ["-c", "while [ ! -e ${TEND_ROOT}/go ]; do sleep 0.02; done"]
      creates: ${TEND_ROOT}/go
    - name: bad
      cmd: /bin/sh
      args: ["-c", "echo broken disk >&2; exit 3"]
  file:
    - name: ${TEND_ROOT}/after
      content: "x\n"
edges:
  - { from: "exec[bad]", to: "file[${TEND_ROOT}/after]" }
"#,
        &[],
    );
    for path in ["/health/readiness", "/readyz"] {
        let r = api.json(path, 503);
        assert_eq!(r["status"], "INIT", "{path}: {r}");
    }
    let h = api.json("/health", 503);
    assert_eq!(h["components"]["world"]["status"], "UP", "{h}");
    assert!(
        h["components"]["world"]["details"]["backend"]
            .as_str()
            .is_some_and(|b| b.starts_with("embedded")),
        "{h}"
    );
    assert_eq!(api.json("/livez", 200)["status"], "UP");

    std::fs::write(api.sb.path("go"), "").unwrap();
    api.wait("readiness to flip to 200", |a| {
        a.get("/health/readiness").0 == 200
    });
    assert_eq!(api.json("/readyz", 200)["status"], "UP");
    // A failed resource is reported by the engine component; liveness stays up.
    api.wait("the engine to report the failure", |a| {
        let h = a.json("/health", 503);
        h["components"]["engine"]["status"] == "DOWN"
            && h["components"]["engine"]["details"]["blocked"][0]
                == format!("file[{}]", a.sb.path("after").display())
    });
    let h = api.json("/health", 503);
    assert_eq!(h["status"], "DOWN", "{h}");
    let failed = &h["components"]["engine"]["details"]["failed"];
    assert_eq!(failed[0]["resource"], "exec[bad]", "{h}");
    assert!(
        failed[0]["error"].as_str().unwrap_or("").contains("3"),
        "the error says how it failed: {h}"
    );
    assert_eq!(h["components"]["program"]["status"], "UP", "{h}");
    assert_eq!(api.json("/health/liveness", 200)["status"], "UP");
    assert!(
        read(&api.sb.path("after")).is_none(),
        "a blocked file is not written"
    );
}

#[test]
fn metrics_parse_and_count_a_repaired_drift() {
    let api = Api::start(GRAPH, &[]);
    let motd = api.sb.path("out/motd");
    api.wait("ready", |a| a.get("/readyz").0 == 200);
    let before = scrape(&api);
    for family in [
        "tend_build_info",
        "tend_resources",
        "tend_check_apply_total",
        "tend_check_apply_duration_seconds_count",
        "tend_graph_swaps_total",
        "tend_graph_swap_duration_seconds_count",
        "tend_converged",
        "tend_exports",
        "tend_collected",
        "tend_world_watch_events_total",
    ] {
        assert!(
            before.samples.iter().any(|s| s.metric == family),
            "/metrics has no {family}: {:?}",
            before.samples.iter().map(|s| &s.metric).collect::<Vec<_>>()
        );
    }
    for s in &before.samples {
        for (k, v) in s.labels.iter() {
            assert!(
                !v.contains('/'),
                "label {k}={v:?} of {} looks like a resource name",
                s.metric
            );
        }
    }
    let changed = [("kind", "file"), ("result", "changed")];
    let c0 = sample(&before, "tend_check_apply_total", &changed).unwrap();
    assert!(c0 >= 1.0, "the first converge changed the file");
    assert_eq!(sample(&before, "tend_graph_swaps_total", &[]), Some(1.0));
    assert_eq!(
        sample(
            &before,
            "tend_resources",
            &[("kind", "file"), ("state", "converged")]
        ),
        Some(1.0)
    );

    std::fs::write(&motd, "drifted\n").unwrap();
    api.wait("the drift to be repaired and counted", |a| {
        let s = scrape(a);
        read(&motd).as_deref() == Some("hello\n")
            && sample(&s, "tend_check_apply_total", &changed).unwrap_or(0.0) > c0
            && sample(&s, "tend_converged", &[]) == Some(1.0)
    });
    let after = scrape(&api);
    let d0 = sample(&before, "tend_drift_events_total", &[("kind", "file")]).unwrap_or(0.0);
    let d1 = sample(&after, "tend_drift_events_total", &[("kind", "file")]).unwrap_or(0.0);
    assert!(d1 > d0, "drift events {d0} -> {d1}");
    let h = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "tend_check_apply_duration_seconds" && s.labels.get("kind") == Some("file")
        })
        .expect("a duration histogram for file");
    assert!(
        matches!(h.value, prometheus_parse::Value::Histogram(_)),
        "{h:?}"
    );
}

#[test]
fn sse_sends_init_then_update_and_heartbeats() {
    let api = Api::start(GRAPH, &[]);
    let motd = api.sb.path("out/motd");
    api.wait("ready", |a| a.get("/readyz").0 == 200);
    let mut s = api.sse("/v1/resources?watch=1&heartbeat=1");
    let init = s.next();
    assert_eq!(
        (init.id.as_str(), init.event.as_str()),
        ("1", "init"),
        "{init:?}"
    );
    assert_eq!(init.data["resources"][0]["state"], "converged", "{init:?}");
    let changes0 = init.data["resources"][0]["changes"].as_u64().unwrap();

    std::fs::write(&motd, "drifted\n").unwrap();
    let mut last_id = 1;
    let mut beats = Vec::new();
    let deadline = Instant::now() + LIMIT;
    // Updates follow the repair; ids keep increasing; heartbeats carry id 0.
    loop {
        assert!(
            Instant::now() < deadline,
            "no update showing the repair\n{}",
            api.ctx()
        );
        let ev = s.next();
        match ev.event.as_str() {
            "update" => {
                let id: u64 = ev.id.parse().unwrap();
                assert_eq!(id, last_id + 1, "{ev:?}");
                last_id = id;
                let r = &ev.data["resources"][0];
                if r["state"] == "converged" && r["changes"].as_u64().unwrap() > changes0 {
                    break;
                }
            }
            "heartbeat" => {
                assert_eq!(ev.id, "0", "{ev:?}");
                beats.push(ev.at);
            }
            other => panic!("unexpected event {other}: {ev:?}"),
        }
    }
    while beats.len() < 3 {
        let ev = s.next();
        if ev.event == "heartbeat" {
            assert_eq!(ev.id, "0", "{ev:?}");
            assert!(ev.data["time"].as_f64().is_some(), "{ev:?}");
            beats.push(ev.at);
        }
    }
    let gap = beats[beats.len() - 1] - beats[beats.len() - 2];
    assert!(
        gap > Duration::from_millis(500) && gap < Duration::from_millis(2500),
        "heartbeat=1 sent heartbeats {gap:?} apart"
    );

    // Every endpoint streams: init with id 1 carrying its document.
    for (path, key) in [
        ("/v1/graph?watch=1", "edges"),
        ("/v1/exports?watch=true", "exports"),
        ("/v1/deploy?watch=1", "deploy"),
    ] {
        let ev = api.sse(path).next();
        assert_eq!((ev.id.as_str(), ev.event.as_str()), ("1", "init"), "{path}");
        assert!(ev.data.get(key).is_some(), "{path}: {:?}", ev.data);
    }
    // watch=0 is a plain GET.
    let plain = api.json("/v1/resources?watch=0", 200);
    assert_eq!(plain["host"], "api-test-host");
}

#[test]
fn bad_requests_get_json_errors() {
    let api = Api::start(GRAPH, &[]);
    for (path, status, says) in [
        ("/nope", 404, "no such path: /nope"),
        ("/v1", 404, "known paths"),
        ("/v1/resources?watch=maybe", 400, "parameter `watch`"),
        (
            "/v1/resources?watch=1&heartbeat=-2",
            400,
            "parameter `heartbeat`",
        ),
        ("/v1/resources?heartbeat=2", 400, "needs watch=1"),
        ("/v1/graph?format=svg", 400, "parameter `format`"),
        (
            "/v1/resources?format=dot",
            400,
            "unknown parameter `format`",
        ),
        ("/metrics?watch=1", 400, "unknown parameter `watch`"),
        ("/health?x=1", 400, "unknown parameter `x`"),
    ] {
        let body = api.json(path, status);
        let err = body["error"].as_str().unwrap_or_default();
        assert!(err.contains(says), "GET {path}: {body}");
    }
    // Wrong method.
    let mut s = TcpStream::connect(&api.addr).unwrap();
    write!(s, "POST /v1/graph HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.0 405"), "{raw}");
    assert!(
        raw.contains(r#"{"error":"/v1/graph: only GET is allowed"}"#),
        "{raw}"
    );
}

/// One raw HTTP/1.0 request with extra header lines; the whole answer.
fn raw_get(addr: &str, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n{headers}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

/// The value of header `name` in a raw answer.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split_once("\r\n\r\n")?.0;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[test]
fn every_answer_carries_a_request_id_that_the_log_names() {
    let api = Api::start(GRAPH, &[]);
    let a = header(&raw_get(&api.addr, "/health", ""), "x-request-id").expect("an id");
    let b = header(&raw_get(&api.addr, "/health", ""), "x-request-id").expect("an id");
    assert_ne!(a, b, "each request has its own id");
    let u = uuid::Uuid::parse_str(&a).unwrap_or_else(|e| panic!("{a:?} is not a UUID: {e}"));
    assert_eq!(u.get_version_num(), 4, "{a}");
    // A client's own id is kept, and a refusal is logged with it.
    let raw = raw_get(&api.addr, "/nope", "X-Request-Id: ci-job-42/step-3\r\n");
    assert!(raw.starts_with("HTTP/1.0 404"), "{raw}");
    assert_eq!(
        header(&raw, "x-request-id").as_deref(),
        Some("ci-job-42/step-3")
    );
    api.wait("the refusal in the log", |a| {
        let log = a.d.stderr();
        log.contains("ci-job-42/step-3") && log.contains("/nope") && log.contains("404")
    });
    // An id that is not printable ASCII is replaced.
    let raw = raw_get(&api.addr, "/health", "X-Request-Id: \r\n");
    let id = header(&raw, "x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

#[test]
fn client_commands_print_what_the_api_says() {
    let api = Api::start(
        r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/
    - name: ${TEND_ROOT}/out/motd
      content: "hello\n"
  exec:
    - name: bad
      cmd: /bin/false
"#,
        &[],
    );
    api.wait("converged", |a| {
        a.json("/v1/resources", 200)["converged"] == true
    });
    let root = api.sb.root().display().to_string();

    let (code, out, err) = api.client(&["status"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "host:       api-test-host\n",
        "world:      embedded",
        "converged:  yes\n",
        "graph:      generation 1, 3 resources, 1 edges\n",
        "health:     DOWN (engine DOWN, program UP, world UP)\n",
        "failed:\n  exec[bad]: ",
    ] {
        assert!(out.contains(line), "`tend status` lacks {line:?}:\n{out}");
    }
    assert!(
        out.contains("converged 2") && out.contains("failed 1"),
        "{out}"
    );

    let (code, out, err) = api.client(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["info"]["hostname"], "api-test-host");
    assert_eq!(doc["health"]["status"], "DOWN");

    let (code, out, err) = api.client(&["graph", "--json"]);
    assert_eq!(code, 0, "{err}");
    let from_client: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(from_client, api.json("/v1/graph", 200));

    let (code, out, err) = api.client(&["graph"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("  file[{root}/out/] -> file[{root}/out/motd]\n")),
        "{out}"
    );

    let (code, out, err) = api.client(&["graph", "--dot"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, api.get("/v1/graph?format=dot").2);
    assert!(out.starts_with("digraph tend {"), "{out}");

    let (code, out, err) = api.client(&["resources"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("exec[bad]") && lines[0].contains(" failed "),
        "{out}"
    );
    assert!(lines[0].contains("error: "), "{out}");
    assert!(
        lines[2].starts_with(&format!("file[{root}/out/motd]")),
        "{out}"
    );

    let (code, out, err) = api.client(&["resources", "--json"]);
    assert_eq!(code, 0, "{err}");
    let from_client: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(from_client["resources"][0]["id"], "exec[bad]");

    let (code, out, err) = api.client(&["exports"]);
    assert_eq!((code, out.as_str()), (0, "no exports\n"), "{err}");

    // --watch prints the first state, then changes.
    let mut child = Command::new(TEND)
        .args(["resources", "--watch", "--json", "--addr", &api.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Json = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "init", "{first}");
    assert_eq!(first["id"], "1", "{first}");
    std::fs::write(api.sb.path("out/motd"), "drifted\n").unwrap();
    let second: Json = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["event"], "update", "{second}");
    assert_eq!(second["id"], "2", "{second}");
    let _ = child.kill();
    let _ = child.wait();

    // Text --watch: the table first, then a line per resource that changes.
    let mut child = Command::new(TEND)
        .args(["resources", "--watch", "--addr", &api.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let table: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(table[0].starts_with("exec[bad]"), "{table:?}");
    std::fs::write(api.sb.path("out/motd"), "drifted again\n").unwrap();
    let change = lines.next().unwrap().unwrap();
    assert!(
        change.starts_with(&format!("file[{root}/out/motd]")),
        "{change}"
    );
    let _ = child.kill();
    let _ = child.wait();

    // No daemon there: a clear error, exit 1.
    let out = Command::new(TEND)
        .args(["status", "--addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reach the tend daemon at 127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn listen_none_and_a_taken_address() {
    let sb = Sandbox::new();
    let g = sb.write("g.yaml", GRAPH);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let state = sb.state_dir();
    let out = sb.run(&[
        "run",
        g.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    assert_eq!(
        out.code(),
        1,
        "{}",
        sb.explain("a taken --listen fails", &out)
    );
    assert!(
        out.stderr
            .contains(&format!("--listen {addr}: cannot listen")),
        "{}",
        sb.explain("the error names the address", &out)
    );
    assert!(read(&sb.path("out/motd")).is_none(), "nothing was applied");

    let out = sb.run(&["run", g.to_str().unwrap(), "--listen", "localhost"]);
    assert_eq!(out.code(), 2, "{}", sb.explain("a bad --listen", &out));
    assert!(out.stderr.contains("--listen"), "{}", out.stderr);

    // `none`: the daemon runs (and converges) without a server.
    let out = sb.run_once(&g, &["--listen", "none"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("--listen none", &out));
    assert!(!out.stderr.contains("http api listening"), "{}", out.stderr);
}

#[test]
fn graph_watch_follows_new_graphs_and_health_reports_a_rejected_one() {
    let api = Api::start(GRAPH, &[]);
    api.wait("ready", |a| a.get("/readyz").0 == 200);
    let mut s = api.sse("/v1/graph?watch=1");
    let init = s.next();
    assert_eq!(init.event, "init");
    assert_eq!(init.data["generation"], 1, "{:?}", init.data);
    assert_eq!(init.data["resources"].as_array().unwrap().len(), 1);

    // A new graph file: the daemon swaps it in and the watch sends it.
    api.sb.write(
        "g.yaml",
        &format!("{GRAPH}    - name: ${{TEND_ROOT}}/out/second\n      content: \"2\\n\"\n"),
    );
    let up = s.next();
    assert_eq!(
        (up.id.as_str(), up.event.as_str()),
        ("2", "update"),
        "{up:?}"
    );
    assert_eq!(up.data["generation"], 2, "{:?}", up.data);
    assert_eq!(
        up.data["resources"].as_array().unwrap().len(),
        2,
        "{:?}",
        up.data
    );
    api.wait("the second file", |a| {
        read(&a.sb.path("out/second")).is_some()
    });
    api.wait("healthy", |a| a.get("/health").0 == 200);

    // A broken graph file is rejected: the program component says why, the old graph runs.
    api.sb.write(
        "g.yaml",
        "resources:\n  file:\n    - name: relative/path\n      bogus: 1\n",
    );
    api.wait("the program component to go DOWN", |a| {
        let (code, _, body) = a.get("/health");
        let h: Json = serde_json::from_str(&body).unwrap();
        code == 503 && h["components"]["program"]["status"] == "DOWN"
    });
    let h = api.json("/health", 503);
    let err = h["components"]["program"]["details"]["error"]
        .as_str()
        .unwrap();
    assert!(err.contains("g.yaml"), "the error names the file: {h}");
    assert_eq!(h["components"]["engine"]["status"], "UP", "{h}");
    assert_eq!(api.json("/readyz", 200)["status"], "UP");
    assert_eq!(api.json("/info", 200)["graph"]["resources"], 2);
}

#[test]
fn a_hundred_watchers_all_get_init_and_update() {
    let api = Api::start(GRAPH, &[]);
    api.wait("ready", |a| a.get("/readyz").0 == 200);
    let mut streams: Vec<Sse> = (0..100).map(|_| api.sse("/v1/resources?watch=1")).collect();
    for s in &mut streams {
        let ev = s.next();
        assert_eq!((ev.id.as_str(), ev.event.as_str()), ("1", "init"), "{ev:?}");
    }
    std::fs::write(api.sb.path("out/motd"), "drifted\n").unwrap();
    for s in &mut streams {
        let ev = s.next();
        assert_eq!(
            (ev.id.as_str(), ev.event.as_str()),
            ("2", "update"),
            "{ev:?}"
        );
    }
    // The daemon still answers, and all 100 streams end cleanly when dropped.
    drop(streams);
    assert_eq!(api.json("/livez", 200)["status"], "UP");
}

/// The API's bearer token: a non-loopback `--listen` without one refuses to start (exit 2,
/// naming the flag); with one, a request without it or with a wrong one is a 401 with a JSON
/// error, the right one is served, the probes stay open with `--api-open-probes`, and the
/// client commands send the token from TEND_TOKEN or --token-file.
#[test]
fn a_token_guards_the_api() {
    let sb = Sandbox::new();
    let g = sb.write("g.yaml", GRAPH);
    let out = sb.run(&["run", g.to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert_eq!(
        out.code(),
        2,
        "{}",
        sb.explain("non-loopback without a token", &out)
    );
    assert!(
        out.stderr.contains("--api-token-file") && out.stderr.contains("0.0.0.0:0"),
        "{}",
        out.stderr
    );
    assert!(read(&sb.path("out/motd")).is_none(), "nothing was applied");

    let token = "s3cret-token-0123456789";
    let tf = sb.write("token", &format!("{token}\n"));
    let api = Api::start(
        GRAPH,
        &[
            "--api-token-file",
            tf.to_str().unwrap(),
            "--api-open-probes",
        ],
    );
    let host = format!("Host: {}\r\n", api.addr);
    let none = raw_get(&api.addr, "/v1/graph", &host);
    assert!(
        none.starts_with("HTTP/1.0 401") || none.starts_with("HTTP/1.1 401"),
        "{none}"
    );
    assert!(
        none.contains("\"error\"") && none.contains("bearer token"),
        "{none}"
    );
    assert_eq!(
        header(&none, "www-authenticate").as_deref(),
        Some("Bearer realm=\"tend\"")
    );
    let wrong = raw_get(
        &api.addr,
        "/v1/graph",
        &format!("{host}Authorization: Bearer not-the-token\r\n"),
    );
    assert!(
        wrong.contains(" 401 ") && wrong.contains("wrong bearer token"),
        "{wrong}"
    );
    let right = raw_get(
        &api.addr,
        "/v1/graph",
        &format!("{host}Authorization: Bearer {token}\r\n"),
    );
    assert!(
        right.contains(" 200 ") && right.contains("\"resources\""),
        "{right}"
    );
    // The probes answer without it.
    assert_eq!(api.get("/livez").0, 200);
    assert_eq!(api.get("/health").0, 401);

    let client = |env: Option<&str>, extra: &[&str]| {
        let mut c = Command::new(TEND);
        c.args(["graph", "--addr", &api.addr])
            .args(extra)
            .env_remove("TEND_ADDR")
            .env_remove("TEND_TOKEN")
            .env_remove("TEND_TOKEN_FILE")
            .stdin(Stdio::null());
        if let Some(t) = env {
            c.env("TEND_TOKEN", t);
        }
        let o = c.output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = client(None, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bearer token"), "{err}");
    let (code, out, err) = client(Some(token), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("file["), "{out}");
    let (code, _, err) = client(None, &["--token-file", tf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    drop(api);
}

/// A secret read with `secret.file` reaches the managed file, and nowhere else: `/v1/graph`,
/// the log (at debug level), `print`'s output and `tend check --print-graph` show
/// `<redacted>`; a resource holding it cannot be exported.
#[test]
fn secrets_reach_the_host_and_are_redacted_everywhere_else() {
    let sb = Sandbox::new();
    let secret = "correct-horse-battery-staple";
    std::fs::write(sb.path("pw"), format!("{secret}\n")).unwrap();
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let prog = sb.write(
        "main.mcl",
        "import \"secret\"\nimport \"sys\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         $pw = secret.file(\"${root}/pw\")\n\
         file \"${root}/out/app.conf\" {\n\tcontent => \"password=${pw}\\n\",\n}\n\
         print \"pw\" {\n\tmsg => \"the password is ${pw}\",\n}\n",
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let d = sb.spawn_run(&prog, &["--listen", &addr, "--log-level", "debug"]);
    let conf = sb.path("out/app.conf");
    let ctx = || sb.explain_daemon(&d);
    wait_for(
        "the file with the secret",
        LIMIT,
        || read(&conf).as_deref() == Some(&format!("password={secret}\n")),
        ctx,
    );
    let get = |path: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    wait_for(
        "print to run",
        LIMIT,
        || d.stdout().contains("print[pw]"),
        ctx,
    );
    let graph = get("/v1/graph");
    assert!(graph.contains("password=<redacted>"), "{graph}");
    let everything = format!(
        "{graph}{}{}{}",
        get("/v1/resources"),
        d.stderr(),
        d.stdout()
    );
    assert!(
        !everything.contains(secret),
        "the secret leaked:\n{everything}"
    );
    assert!(
        d.stdout().contains("the password is <redacted>"),
        "{}",
        d.stdout()
    );

    let out = sb.run(&["check", "--print-graph", prog.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", sb.explain("check", &out));
    assert!(!out.stdout.contains(secret), "{}", out.stdout);

    // Exported, it would reach the World: refused, naming the resource and the meta param.
    let exp = sb.write(
        "exp/main.mcl",
        "import \"secret\"\nimport \"sys\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         file \"/tmp/tend-never\" {\n\tcontent => secret.file(\"${root}/pw\"),\n\tMeta:export => [\"*\"],\n}\n",
    );
    let out = sb.run(&["check", exp.to_str().unwrap()]);
    assert_eq!(out.code(), 1, "{}", sb.explain("check of an export", &out));
    assert!(
        out.stderr.contains("meta parameter `export`")
            && out.stderr.contains("secrets are never exported"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(secret), "{}", out.stderr);

    // Nor can a kv write one to the World.
    let kv = sb.write(
        "kv/main.mcl",
        "import \"secret\"\nimport \"sys\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         kv \"db-password\" {\n\tvalue => secret.file(\"${root}/pw\"),\n}\n",
    );
    let out = sb.run(&["check", kv.to_str().unwrap()]);
    assert_eq!(out.code(), 1, "{}", sb.explain("check of a kv", &out));
    assert!(
        out.stderr.contains("secrets never go to the World"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(secret), "{}", out.stderr);
}

/// `/v1/graph` shows the values a send/recv edge carries.
#[test]
fn graph_shows_send_recv_fields() {
    let prog = "test \"a\" {}\ntest \"b\" {}\nTest[\"a\"].hello -> Test[\"b\"].comment\n";
    let api = Api::start_file("main.mcl", prog, &[]);
    let mut edges = Json::Null;
    api.wait("the graph with its edge", |a| {
        edges = a.json("/v1/graph", 200)["edges"].clone();
        edges.as_array().is_some_and(|e| !e.is_empty())
    });
    assert_eq!(
        edges,
        serde_json::json!([{
            "from": "test[a]",
            "to": "test[b]",
            "notify": false,
            "send": [{ "send": "hello", "recv": "comment" }],
        }]),
        "{}",
        api.ctx()
    );
}
