//! Several real `tend run` hosts on one real etcd, driven by a controller running
//! `tend deploy`: deploys reach every host, a bad deploy is refused or rejected, and a stale
//! parent is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tend_integration::{tend, wait_for, Host};
use tend_testkit::EtcdServer;

const WITHIN: Duration = Duration::from_secs(30);

/// Writes a program into `dir/name/main.mcl` and returns the directory.
fn program(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("main.mcl"), body).unwrap();
    p
}

fn hello(version: &str) -> String {
    format!(
        "import \"sys\"\n\
         $root = sys.getenv(\"TEND_ROOT\")\n\
         file \"${{root}}/hello\" {{\n\
         \tcontent => \"i am ${{hostname}}{version}\\n\",\n\
         }}\n"
    )
}

fn deploy(etcd: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["deploy", "--etcd", etcd];
    all.extend_from_slice(args);
    tend(&all)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_content(hosts: &[&Host], want: impl Fn(&Host) -> String) {
    for h in hosts {
        let w = want(h);
        assert!(
            wait_for(WITHIN, || h.read("hello").as_deref() == Some(w.as_str())),
            "{} never wrote {w:?} (has {:?}); its log:\n{}",
            h.name,
            h.read("hello"),
            h.log()
        );
    }
}

#[test]
fn deploys_reach_every_host_and_bad_ones_are_refused() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["h1", "h2", "h3"]
        .iter()
        .map(|n| Host::start(n, &url, None, &[]))
        .collect();
    let all: Vec<&Host> = hosts.iter().collect();

    // 1. A deploy reaches three hosts; a second deploy changes the content on all three.
    let p1 = program(src.path(), "v1", &hello(""));
    let o = deploy(&url, &[p1.to_str().unwrap(), "-m", "first"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&all, |h| format!("i am {}\n", h.name));
    let p2 = program(src.path(), "v2", &hello(", v2"));
    let o = deploy(&url, &[p2.to_str().unwrap(), "-m", "second"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&all, |h| format!("i am {}, v2\n", h.name));

    // The cluster view: every host runs deploy 2 and is converged.
    assert!(
        wait_for(WITHIN, || {
            let o = tend(&["world", "--etcd", &url, "hosts", "--json"]);
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            ["h1", "h2", "h3"].iter().all(|h| out.contains(h))
                && out.matches("\"converged\": true").count() == 3
                && out.matches("\"deploy\": 2").count() == 3
        }),
        "hosts never reported deploy 2, converged: {}",
        text(&tend(&["world", "--etcd", &url, "hosts", "--json"]))
    );

    // 5a. A deploy that does not type-check is refused by `tend deploy`: nothing is published.
    let bad = program(
        src.path(),
        "bad",
        "$x int = \"one\" + 1\ntest \"${x}\" {}\n",
    );
    let o = deploy(&url, &[bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing was published"),
        "{}",
        text(&o)
    );
    let list = deploy(&url, &["--list"]);
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listing.contains("2*") && !listing.contains("\n3"),
        "{listing}"
    );

    // 5b. A deploy that one host cannot run (it panics there) leaves that host on its previous
    // program; the other hosts move on.
    let p3 = program(
        src.path(),
        "v3",
        &format!(
            "panic($hostname == \"h2\", \"not on h2\")\n{}",
            hello(", v3")
        ),
    );
    let o = deploy(&url, &[p3.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&hosts[0], &hosts[2]], |h| {
        format!("i am {}, v3\n", h.name)
    });
    assert!(
        wait_for(WITHIN, || hosts[1].log().contains("deploy rejected")),
        "h2 did not report the rejected deploy:\n{}",
        hosts[1].log()
    );
    assert_eq!(hosts[1].read("hello").as_deref(), Some("i am h2, v2\n"));
    // ... and says so in its host record.
    assert!(
        wait_for(WITHIN, || {
            let o = tend(&["world", "--etcd", &url, "hosts", "--json"]);
            String::from_utf8_lossy(&o.stdout).contains("deploy 3 rejected")
        }),
        "h2's host record does not report the rejection: {}",
        text(&tend(&["world", "--etcd", &url, "hosts"]))
    );

    // 6. Two controllers race: the one whose parent is stale is refused, naming the latest.
    let o = deploy(&url, &[p2.to_str().unwrap(), "--parent", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the latest is #3"), "{}", text(&o));
    // ... unless forced.
    let o = deploy(&url, &[p2.to_str().unwrap(), "--parent", "2", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&all, |h| format!("i am {}, v2\n", h.name));

    // Rollback republishes an old bundle as a new deploy.
    let o = deploy(&url, &["--rollback", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&all, |h| format!("i am {}\n", h.name));
    let list = deploy(&url, &["--list"]);
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(listing.contains("rollback to deploy 1"), "{listing}");
}

#[test]
fn a_host_without_program_waits_for_the_first_deploy() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let h = Host::start("solo", &url, None, &[]);
    assert!(
        wait_for(WITHIN, || h.log().contains("waiting for")),
        "no waiting message:\n{}",
        h.log()
    );
    let src = tempfile::tempdir().unwrap();
    let p = program(src.path(), "v1", &hello(""));
    let o = deploy(&url, &[p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&h], |h| format!("i am {}\n", h.name));
}

#[test]
fn a_program_given_to_run_becomes_the_first_deploy() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let p1 = program(src.path(), "v1", &hello(""));
    let h1 = Host::start("h1", &url, Some(&p1), &[]);
    wait_content(&[&h1], |h| format!("i am {}\n", h.name));
    // A second host given another program follows the cluster's existing deploy.
    let p2 = program(src.path(), "v2", &hello(", v2"));
    let h2 = Host::start("h2", &url, Some(&p2), &[]);
    wait_content(&[&h2], |h| format!("i am {}\n", h.name));
    let list = deploy(&url, &["--list"]);
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listing.contains("1*") && !listing.contains("\n2"),
        "{listing}"
    );
}

const EXPORTS: &str = r#"import "sys"
$root = sys.getenv("TEND_ROOT")
file "${root}/hello" {
	content => "i am ${hostname}\n",
}
if $hostname == "h1" {
	file "to-h2" {
		content => "for h2\n",
		Meta:hidden => true,
		Meta:export => ["h2"],
	}
	file "to-all" {
		content => "for all\n",
		Meta:hidden => true,
		Meta:export => ["*"],
	}
}
if $hostname != "h1" {
	collect file "to-h2" {
		path => "${root}/to-h2",
		Meta:hidden => false,
	}
	collect file "to-all" {
		path => "${root}/to-all",
		Meta:hidden => false,
	}
}
"#;

/// The resource names in a host's running graph (from its HTTP API).
fn graph_names(port: u16) -> String {
    match tend_testkit::http_get(&format!("http://127.0.0.1:{port}"), "/v1/graph") {
        Ok((200, body)) => body,
        _ => String::new(),
    }
}

#[test]
fn exports_are_directed_withdrawn_and_expire_with_their_host() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let ttl = ["--session-ttl", "2"];
    let mut h1 = Host::start("h1", &url, None, &ttl);
    let port = tend_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let h2 = Host::start(
        "h2",
        &url,
        None,
        &["--session-ttl", "2", "--listen", &listen],
    );
    let h3 = Host::start("h3", &url, None, &ttl);

    // 2. h1 exports one file to h2 only and one to everyone: h2 applies both, h3 only the
    // one for everyone, h1 neither (they are hidden there).
    let p = program(src.path(), "exports", EXPORTS);
    let o = deploy(&url, &[p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for (h, file, want) in [
        (&h2, "to-h2", "for h2\n"),
        (&h2, "to-all", "for all\n"),
        (&h3, "to-all", "for all\n"),
    ] {
        assert!(
            wait_for(WITHIN, || h.read(file).as_deref() == Some(want)),
            "{} never got {file}; its log:\n{}\nh1's log:\n{}",
            h.name,
            h.log(),
            h1.log()
        );
    }
    wait_content(&[&h1], |h| format!("i am {}\n", h.name));
    assert_eq!(
        h3.read("to-h2"),
        None,
        "h3 applied an export addressed to h2"
    );
    assert_eq!(h1.read("to-h2"), None);
    assert_eq!(h1.read("to-all"), None);
    assert!(graph_names(port).contains("to-h2"), "{}", graph_names(port));

    // A changed export reaches the collector.
    let changed = program(
        src.path(),
        "changed",
        &EXPORTS.replace("for h2\\n", "for h2, v2\\n"),
    );
    let o = deploy(&url, &[changed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_for(WITHIN, || h2.read("to-h2").as_deref()
            == Some("for h2, v2\n")),
        "h2 never got the changed export: {:?}\n{}",
        h2.read("to-h2"),
        h2.log()
    );

    // 4. h1 killed with SIGKILL: its exports leave h2's graph within the session TTL (+1 s,
    // + the time to notice); restarted, h1 exports them again.
    h1.kill();
    let killed = std::time::Instant::now();
    assert!(
        wait_for(WITHIN, || !graph_names(port).contains("to-h2")),
        "h1's exports never left h2's graph: {}",
        graph_names(port)
    );
    let gone_after = killed.elapsed();
    assert!(
        gone_after < Duration::from_secs(4),
        "exports took {gone_after:?} to expire (TTL 2 s)"
    );
    h1.spawn(&url, None, &ttl);
    assert!(
        wait_for(WITHIN, || graph_names(port).contains("to-h2")),
        "restarted h1 did not re-export: {}\nh1's log:\n{}",
        graph_names(port),
        h1.log()
    );

    // 3. h1 withdraws the export for h2 (a new deploy without it): it leaves h2's graph.
    let p2 = program(
        src.path(),
        "withdrawn",
        &EXPORTS.replace("Meta:export => [\"h2\"]", "Meta:export => []"),
    );
    let o = deploy(&url, &[p2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_for(WITHIN, || !graph_names(port).contains("to-h2")
            && graph_names(port).contains("to-all")),
        "the withdrawn export stayed in h2's graph: {}",
        graph_names(port)
    );
}

#[test]
fn hosts_keep_enforcing_while_etcd_is_down() {
    let mut etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let ttl = ["--session-ttl", "2"];
    let h1 = Host::start("h1", &url, None, &ttl);
    let port = tend_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let h2 = Host::start(
        "h2",
        &url,
        None,
        &["--session-ttl", "2", "--listen", &listen],
    );
    let p = program(src.path(), "exports", EXPORTS);
    let o = deploy(&url, &[p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_for(WITHIN, || h2.read("to-h2").as_deref() == Some("for h2\n")),
        "h2 never collected: {}",
        h2.log()
    );

    // 7. etcd stops: a drifted file is still repaired on both hosts.
    etcd.kill();
    for h in [&h1, &h2] {
        std::fs::write(h.root.join("hello"), "drifted\n").unwrap();
    }
    wait_content(&[&h1, &h2], |h| format!("i am {}\n", h.name));
    std::fs::remove_file(h2.root.join("to-h2")).unwrap();
    assert!(
        wait_for(WITHIN, || h2.read("to-h2").as_deref() == Some("for h2\n")),
        "h2 did not repair its collected file while etcd was down: {}",
        h2.log()
    );

    // etcd returns: nothing is lost, exports are consistent, and new deploys flow again.
    etcd.restart().expect("etcd restart");
    assert!(
        wait_for(WITHIN, || graph_names(port).contains("to-h2")
            && graph_names(port).contains("to-all")),
        "h2's collected resources after etcd returned: {}",
        graph_names(port)
    );
    let p2 = program(
        src.path(),
        "v2",
        &EXPORTS.replace("i am ${hostname}", "i am ${hostname}, v2"),
    );
    let o = deploy(&url, &[p2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&h1, &h2], |h| format!("i am {}, v2\n", h.name));
    assert!(graph_names(port).contains("to-h2"), "{}", graph_names(port));
}

/// Opens a Server-Sent Events stream and returns it once its `init` event arrived.
fn sse_open(port: u16, path: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: init") {
        let n = s.read(&mut buf).expect("reading the event stream");
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

#[test]
fn api_watchers_are_served_from_the_watch_cache() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let port = tend_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let h2 = Host::start("h2", &url, None, &["--listen", &listen]);
    let h1 = Host::start("h1", &url, None, &[]);
    let p = program(src.path(), "exports", EXPORTS);
    let o = deploy(&url, &[p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let exports = || {
        tend_testkit::http_get(&format!("http://127.0.0.1:{port}"), "/v1/exports")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    // /v1/exports shows what h2 may collect, from the World.
    assert!(
        wait_for(WITHIN, || exports().contains("\"to-h2\"")
            && exports().contains("\"to-all\"")),
        "exports: {}\nh1: {}",
        exports(),
        h1.log()
    );
    let watchers = || {
        etcd.metric("etcd_debugging_mvcc_watcher_total")
            .unwrap_or(-1.0)
    };
    let before = watchers();
    assert!(before >= 1.0, "etcd reports {before} watchers");
    let paths = [
        "/v1/exports?watch=1",
        "/v1/resources?watch=1",
        "/v1/deploy?watch=1",
        "/v1/graph?watch=1",
    ];
    let streams: Vec<_> = (0..100)
        .map(|i| sse_open(port, paths[i % paths.len()]))
        .collect();
    assert_eq!(
        watchers(),
        before,
        "100 API watchers changed etcd's watcher count"
    );
    drop(streams);
    drop(h2);
}

#[test]
fn kv_values_flow_between_hosts_live() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let h1 = Host::start("h1", &url, None, &[]);
    let h2 = Host::start("h2", &url, None, &[]);
    let body = r#"import "sys"
import "world"
$root = sys.getenv("TEND_ROOT")
kv "color" {
	value => "${hostname}-COLOR",
}
if $hostname == "h1" {
	kv "motd" {
		value => "MOTD",
		mapped => false,
	}
}
$colors = world.kvlookup("color")
$motd = world.getval("motd")
file "${root}/seen" {
	content => ($colors["h1"] <|> "none") + " " + ($colors["h2"] <|> "none") + " " + $motd->value + "\n",
}
"#;
    let p = program(src.path(), "kv", &body.replace("COLOR", "blue"));
    let o = deploy(&url, &[p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let seen = |h: &Host, want: &str| {
        assert!(
            wait_for(WITHIN, || h.read("seen").as_deref() == Some(want)),
            "{} sees {:?}, not {want:?}; its log:\n{}",
            h.name,
            h.read("seen"),
            h.log()
        );
    };
    seen(&h1, "h1-blue h2-blue MOTD\n");
    seen(&h2, "h1-blue h2-blue MOTD\n");
    // A new value on every host reaches the others without recompiling anything but the deploy.
    let p2 = program(src.path(), "kv2", &body.replace("COLOR", "red"));
    let o = deploy(&url, &[p2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    seen(&h1, "h1-red h2-red MOTD\n");
    seen(&h2, "h1-red h2-red MOTD\n");
}

#[test]
fn a_host_collects_its_own_export_beside_the_hidden_copy() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let port = tend_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let h = Host::start("solo", &url, None, &["--listen", &listen]);
    let body = r#"import "sys"
import "world/collect"
$root = sys.getenv("TEND_ROOT")
file "mine" {
	content => "mine\n",
	Meta:hidden => true,
	Meta:export => ["*"],
}
collect file collect.res("file") {
	path => "${root}/mine",
	Meta:hidden => false,
}
"#;
    let p = program(src.path(), "self", body);
    let o = deploy(&url, &[p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_for(WITHIN, || h.read("mine").as_deref() == Some("mine\n")),
        "the host did not apply its own collected export: {}",
        h.log()
    );
    let g = graph_names(port);
    assert_eq!(
        g.matches("\"mine\"").count(),
        2,
        "both copies are in the graph: {g}"
    );
}

/// Files shipped with a deploy: a template beside `main.mcl` is rendered on every host
/// (`deploy.readfile` + `golang.template`), a shipped directory is a `file`'s `source`
/// (`deploy.directory`), and a change to either, redeployed, reaches every host.
#[test]
fn shipped_files_reach_every_host_and_follow_redeploys() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["h1", "h2"]
        .iter()
        .map(|n| Host::start(n, &url, None, &[]))
        .collect();
    let main = "import \"deploy\"\nimport \"golang\"\nimport \"sys\"\n\
        $root = sys.getenv(\"TEND_ROOT\")\n\
        file \"${root}/motd\" {\n\
        \tcontent => golang.template(deploy.readfile(\"/templates/motd.tmpl\"), struct{host => $hostname, n => 2}),\n\
        }\n\
        file \"${root}/banner\" {\n\
        \tsource => deploy.directory(\"/files/\") + \"banner\",\n\
        }\n";
    let prog = program(src.path(), "shipped", main);
    std::fs::create_dir_all(prog.join("templates")).unwrap();
    std::fs::create_dir_all(prog.join("files")).unwrap();
    // Left out of the bundle: dot files and `target/`.
    std::fs::create_dir_all(prog.join(".git")).unwrap();
    std::fs::write(prog.join(".git/HEAD"), "ref: x\n").unwrap();
    std::fs::write(
        prog.join("templates/motd.tmpl"),
        "hello {{.Host}}, {{if gt .N 1}}many{{else}}one{{end}}\n",
    )
    .unwrap();
    std::fs::write(prog.join("files/banner"), "banner v1\n").unwrap();
    let o = deploy(&url, &[prog.to_str().unwrap(), "--wait", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    for h in &hosts {
        assert_eq!(h.read("motd"), Some(format!("hello {}, many\n", h.name)));
        assert_eq!(h.read("banner"), Some("banner v1\n".to_string()));
        let bundle = h.state_dir().join("deploys/1");
        assert!(bundle.join("templates/motd.tmpl").is_file(), "{}", h.log());
        assert!(!bundle.join(".git").exists(), "dot files are not shipped");
    }

    // Change both shipped files and redeploy: every host follows.
    std::fs::write(
        prog.join("templates/motd.tmpl"),
        "welcome to {{.Host}} ({{.N}})\n",
    )
    .unwrap();
    std::fs::write(prog.join("files/banner"), "banner v2\n").unwrap();
    let o = deploy(&url, &[prog.to_str().unwrap(), "--wait", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    for h in &hosts {
        assert_eq!(h.read("motd"), Some(format!("welcome to {} (2)\n", h.name)));
        assert_eq!(h.read("banner"), Some("banner v2\n".to_string()));
    }
}

/// `tend deploy --wait`: exit 0 once every host runs the deploy converged; exit 1 naming the
/// host that rejected it, the host with a failed resource (and the resource), or the hosts not
/// converged when the timeout passes.
#[test]
fn deploy_wait_follows_the_hosts_to_the_end() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["h1", "h2"]
        .iter()
        .map(|n| Host::start(n, &url, None, &[]))
        .collect();
    let wait = |p: &Path, extra: &[&str]| {
        let mut a = vec![p.to_str().unwrap(), "--wait", "--timeout", "60"];
        a.extend_from_slice(extra);
        deploy(&url, &a)
    };

    // 1. Converged everywhere: exit 0, and the JSON table says so per host.
    let p1 = program(src.path(), "v1", &hello(""));
    let o = wait(&p1, &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json on stdout");
    assert_eq!(doc["result"], "converged", "{doc}");
    assert_eq!(doc["deploy"], 1);
    let states: Vec<_> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h["state"].clone()))
        .collect();
    assert_eq!(
        states,
        [
            ("h1".to_string(), serde_json::json!("converged")),
            ("h2".to_string(), serde_json::json!("converged"))
        ]
    );
    for h in &hosts {
        assert_eq!(h.read("hello"), Some(format!("i am {}\n", h.name)));
    }

    // 2. A host that rejects the deploy: exit 1, naming it and why.
    let p2 = program(
        src.path(),
        "v2",
        &format!(
            "panic($hostname == \"h2\", \"not on h2\")\n{}",
            hello(", v2")
        ),
    );
    let o = wait(&p2, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("h2: rejected: deploy 2 rejected"),
        "{}",
        text(&o)
    );
    assert!(!err.contains("h1:"), "h1 took it: {}", text(&o));

    // 3. A host with a failed resource: exit 1, naming the host and the resource.
    let p3 = program(
        src.path(),
        "v3",
        &format!(
            "{}if $hostname == \"h1\" {{\n\tfile \"/proc/tend-cannot/x\" {{\n\t\tcontent => \"x\\n\",\n\t}}\n}}\n",
            hello(", v3")
        ),
    );
    let o = wait(&p3, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("h1: failed:") && err.contains("file[/proc/tend-cannot/x]"),
        "{}",
        text(&o)
    );

    // 4. Not converged in time: exit 1, naming every host still converging.
    let p4 = program(
        src.path(),
        "v4",
        &format!(
            "{}exec \"slow\" {{\n\tcmd => \"/bin/sleep\",\n\targs => [\"30\"],\n}}\n",
            hello(", v4")
        ),
    );
    let t = std::time::Instant::now();
    let o = deploy(&url, &[p4.to_str().unwrap(), "--wait", "--timeout", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not converged within 3 s")
            && err.contains("h1: pending")
            && err.contains("h2: pending"),
        "{}",
        text(&o)
    );
}

/// `tend keygen FILE` in `dir`; returns the key's fingerprint.
fn keygen(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    let o = tend(&["keygen", key.to_str().unwrap(), "--comment", "test"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint: {}", text(&o)))
        .to_string()
}

/// What `tend world hosts --json` says of `host`'s `error`.
fn host_error(url: &str, host: &str) -> String {
    let o = tend(&["world", "--etcd", url, "hosts", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    doc.as_array()
        .into_iter()
        .flatten()
        .find(|h| h["hostname"] == host)
        .and_then(|h| h["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Plays a compromised etcd: writes to the store with the World directly, no key at hand.
fn as_attacker(url: &str, f: impl AsyncFnOnce(&tend_world::World)) {
    use tend_world::store::etcd::EtcdConfig;
    use tend_world::{Backend, World, WorldConfig};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = WorldConfig::with_backend(
            Backend::Etcd(EtcdConfig::new(vec![url.to_string()])),
            "attacker",
        );
        cfg.register = false;
        let w = World::connect(cfg).await.expect("the attacker's world");
        f(&w).await;
        let _ = w.close().await;
    });
}

/// Signed deploys (issue 17): a host with `--trust` runs a deploy signed by a key it trusts,
/// and rejects, keeping its program and saying why in its log, `/health` and its host record,
/// an unsigned deploy, one signed by another key, one whose signature was moved onto other
/// files, and an older signed deploy replayed as the latest (also after a restart). A host
/// without trusted keys runs unsigned deploys and says at start that they are not verified.
#[test]
fn signed_deploys_run_and_the_others_are_rejected() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let keys = src.path().join("keys");
    let trust = src.path().join("trust");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::create_dir_all(&trust).unwrap();
    let ours = keygen(&keys, "ctl.key");
    let theirs = keygen(&keys, "other.key");
    std::fs::copy(keys.join("ctl.key.pub"), trust.join("ctl.pub")).unwrap();
    let key = keys.join("ctl.key");
    let other = keys.join("other.key");
    let port = tend_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let trusting = [
        "--trust",
        trust.to_str().unwrap(),
        "--listen",
        &listen,
        "--session-ttl",
        "2",
    ];
    let mut h1 = Host::start("h1", &url, None, &trusting);
    let h2 = Host::start("h2", &url, None, &[]);
    let health = || {
        tend_testkit::http_get(&format!("http://127.0.0.1:{port}"), "/health")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let p = |name: &str, v: &str| program(src.path(), name, &hello(v));

    // A signed deploy runs everywhere.
    let o = deploy(
        &url,
        &[
            p("v1", "").to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--wait",
            "--timeout",
            "30",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("signed by {ours}")),
        "{}",
        text(&o)
    );
    wait_content(&[&h1, &h2], |h| format!("i am {}\n", h.name));
    assert!(h1.log().contains("deploys are verified"), "{}", h1.log());
    let unverified = "deploys are not verified";
    assert_eq!(h2.log().matches(unverified).count(), 1, "{}", h2.log());
    assert!(!h1.log().contains(unverified), "{}", h1.log());

    // Unsigned: h2 runs it, h1 rejects it (and `--wait` says so), keeping deploy 1.
    let o = deploy(
        &url,
        &[
            p("v2", ", v2").to_str().unwrap(),
            "--wait",
            "--timeout",
            "30",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("h1: rejected: deploy 2 rejected: unsigned"),
        "{}",
        text(&o)
    );
    wait_content(&[&h2], |h| format!("i am {}, v2\n", h.name));
    assert!(
        wait_for(WITHIN, || host_error(&url, "h1")
            .starts_with("deploy 2 rejected: unsigned")
            && health().contains("deploy 2 rejected: unsigned")),
        "h1 does not report the unsigned deploy: {:?} {}\n{}",
        host_error(&url, "h1"),
        health(),
        h1.log()
    );
    assert_eq!(h1.read("hello").as_deref(), Some("i am h1\n"));

    // Signed by a key h1 does not trust.
    let o = deploy(
        &url,
        &[
            p("v3", ", v3").to_str().unwrap(),
            "--key",
            other.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&h2], |h| format!("i am {}, v3\n", h.name));
    let want = format!("deploy 3 rejected: signed by an untrusted key {theirs}");
    assert!(
        wait_for(WITHIN, || host_error(&url, "h1") == want
            && health().contains(&want)),
        "h1 does not report the untrusted key: {:?}\n{}",
        host_error(&url, "h1"),
        h1.log()
    );
    assert_eq!(h1.read("hello").as_deref(), Some("i am h1\n"));
    let logged = format!("signed by an untrusted key {theirs}");
    assert!(h1.log().contains(&logged), "{}", h1.log());

    // A signed deploy again: h1 moves on, and its record's error is cleared.
    let o = deploy(
        &url,
        &[
            p("v4", ", v4").to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&h1, &h2], |h| format!("i am {}, v4\n", h.name));
    assert!(
        wait_for(WITHIN, || host_error(&url, "h1").is_empty()),
        "{:?}",
        host_error(&url, "h1")
    );

    // A signed rollback (deploy 5: deploy 1's files), and a signed deploy forced past a
    // stale parent (deploy 6: signed again on top of the latest).
    let o = deploy(&url, &["--rollback", "1", "--key", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&h1, &h2], |h| format!("i am {}\n", h.name));
    let o = deploy(
        &url,
        &[
            p("v6", ", v6").to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--parent",
            "4",
            "--force",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deploy 6 published"),
        "{}",
        text(&o)
    );
    wait_content(&[&h1, &h2], |h| format!("i am {}, v6\n", h.name));
    assert!(
        h1.log().contains("deploy signature verified"),
        "{}",
        h1.log()
    );

    // A compromised etcd moves deploy 6's signature onto deploy 2's files.
    as_attacker(&url, async |w| {
        use tend_world::{DeployWorld, NewDeploy};
        let d6 = w.get_deploy(6).await.unwrap();
        let d2 = w.get_deploy(2).await.unwrap();
        let d = w
            .add_deploy(NewDeploy {
                bundle: d2.bundle,
                message: d6.message,
                author: d6.author,
                parent: Some(6),
                force: false,
                signature: d6.signature,
                target: None,
            })
            .await
            .unwrap();
        assert_eq!(d.id, 7);
    });
    wait_content(&[&h2], |h| format!("i am {}, v2\n", h.name));
    assert!(
        wait_for(WITHIN, || host_error(&url, "h1").starts_with(&format!(
            "deploy 7 rejected: bad signature (key {ours})"
        ))),
        "h1 does not report the bad signature: {:?}\n{}",
        host_error(&url, "h1"),
        h1.log()
    );
    assert_eq!(h1.read("hello").as_deref(), Some("i am h1, v6\n"));

    // ... then replays deploy 1 (signed, but older than what h1 verified) as the latest.
    as_attacker(&url, async |w| {
        use tend_world::codec::encode;
        use tend_world::store::{Op, Txn};
        w.store()
            .txn(Txn::ops(vec![Op::put(
                w.keys().deploy_latest(),
                encode(&1u64),
            )]))
            .await
            .unwrap();
    });
    let replayed = "older than deploy 6, which this host already verified";
    assert!(
        wait_for(WITHIN, || host_error(&url, "h1")
            .starts_with(&format!("deploy 1 rejected: {replayed}"))),
        "h1 does not refuse the replayed deploy: {:?}\n{}",
        host_error(&url, "h1"),
        h1.log()
    );
    assert_eq!(h1.read("hello").as_deref(), Some("i am h1, v6\n"));
    // The guard outlives a restart: h1 waits rather than run deploy 1, and says why.
    h1.kill();
    h1.spawn(&url, None, &trusting);
    assert!(
        wait_for(WITHIN, || h1.log().matches(replayed).count() >= 2),
        "{}",
        h1.log()
    );
    assert!(
        wait_for(WITHIN, || host_error(&url, "h1")
            .starts_with(&format!("deploy 1 rejected: {replayed}"))),
        "{:?}",
        host_error(&url, "h1")
    );
    assert_eq!(h1.read("hello").as_deref(), Some("i am h1, v6\n"));
}

/// Targeted deploys: `--selector` and `--hosts` reach only the hosts they name (and `--wait`
/// waits only for them); the others keep their program; a host that starts while the latest
/// deploy is for others runs the newest deploy that is for it; `tend world hosts` shows the
/// labels (with `os` set from the OS family).
#[test]
fn targeted_deploys_reach_only_their_hosts() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let web = Host::start("web1", &url, None, &["--label", "role=web"]);
    let db = Host::start("db1", &url, None, &["--label", "role=db"]);
    let p = |name: &str, v: &str| program(src.path(), name, &hello(v));
    let wait = |prog: &Path, extra: &[&str]| {
        let mut a = vec![prog.to_str().unwrap(), "--wait", "--timeout", "60"];
        a.extend_from_slice(extra);
        deploy(&url, &a)
    };

    let o = wait(&p("v1", ""), &[]);
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&[&web, &db], |h| format!("i am {}\n", h.name));

    // For the web hosts only: db1 keeps deploy 1, and the wait is for web1 alone.
    let o = wait(&p("v2", ", v2"), &["--selector", "role=web", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let waited: Vec<_> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(waited, ["web1"], "{doc}");
    assert_eq!(web.read("hello").as_deref(), Some("i am web1, v2\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        db.read("hello").as_deref(),
        Some("i am db1\n"),
        "{}",
        db.log()
    );
    assert!(
        db.log()
            .contains("deploy 2 is for selector role=web, not this host: keeping deploy 1"),
        "{}",
        db.log()
    );

    // By name pattern: db1 takes deploy 3, web1 keeps deploy 2.
    let o = wait(&p("v3", ", v3"), &["--hosts", "db*"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(db.read("hello").as_deref(), Some("i am db1, v3\n"));
    assert_eq!(web.read("hello").as_deref(), Some("i am web1, v2\n"));

    // A new web host joins while the latest deploy (3) is for db*: it runs deploy 2.
    let web2 = Host::start("web2", &url, None, &["--label", "role=web"]);
    wait_content(&[&web2], |_| "i am web2, v2\n".to_string());

    let o = tend(&["world", "--etcd", &url, "hosts"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("LABELS"), "{table}");
    assert!(table.contains("role=db"), "{table}");
    let o = tend(&["world", "--etcd", &url, "hosts", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let web1 = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "web1")
        .unwrap();
    assert_eq!(web1["labels"]["role"], "web", "{doc}");
    assert_eq!(web1["labels"]["os"], "debian", "{doc}");

    // Bad flags name themselves.
    let o = deploy(&url, &[p("v4", "").to_str().unwrap(), "--selector", "role"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--selector"),
        "{}",
        text(&o)
    );
}

/// Staged rollouts: `--canary 1 --batch 2` over four hosts (three stages), a rollout that
/// stops at a failing batch and rolls back (the hosts it did not reach never took it), and a
/// rollout whose stage timed out, resumed by another `tend deploy --resume`.
#[test]
fn staged_rollouts_stop_roll_back_and_resume() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["r1", "r2", "r3", "r4"]
        .iter()
        .map(|n| Host::start(n, &url, None, &[]))
        .collect();
    let all: Vec<&Host> = hosts.iter().collect();
    let p = |name: &str, body: &str| program(src.path(), name, body);
    let o = deploy(
        &url,
        &[
            p("v1", &hello("")).to_str().unwrap(),
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    wait_content(&all, |h| format!("i am {}\n", h.name));

    // 1. Three stages, all converge.
    let rollout = |prog: &Path, extra: &[&str]| {
        let mut a = vec![prog.to_str().unwrap(), "--canary", "1", "--batch", "2"];
        a.extend_from_slice(extra);
        deploy(&url, &a)
    };
    let o = rollout(&p("v2", &hello(", v2")), &["--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stage 1/3") && err.contains("stage 3/3"),
        "{}",
        text(&o)
    );
    assert!(
        err.contains("rollout done: 4 host(s) in 3 stage(s)"),
        "{}",
        text(&o)
    );
    wait_content(&all, |h| format!("i am {}, v2\n", h.name));

    // 2. A batch fails (r3 rejects it): stopped, rolled back; r4 never took it.
    let bad = format!(
        "panic($hostname == \"r3\", \"not on r3\")\n{}",
        hello(", v3")
    );
    let o = rollout(
        &p("v3", &bad),
        &["--timeout", "60", "--rollback-on-failure"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stopped at stage 2/3"), "{}", text(&o));
    assert!(err.contains("r3: rejected"), "{}", text(&o));
    assert!(err.contains("rolled back r1, r2, r3"), "{}", text(&o));
    wait_content(&all, |h| format!("i am {}, v2\n", h.name));

    // 3. A stage times out (r2's slow command): the rollout is kept in the World, and
    // `--resume` from another controller finishes it.
    let slow = format!(
        "{}if $hostname == \"r2\" {{\n\texec \"slow\" {{\n\t\tcmd => \"/bin/sleep\",\n\t\targs => [\"4\"],\n\t}}\n}}\n",
        hello(", v4")
    );
    let o = rollout(&p("v4", &slow), &["--timeout", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tend deploy --resume"),
        "{}",
        text(&o)
    );
    let o = deploy(&url, &["--resume", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resuming the rollout"),
        "{}",
        text(&o)
    );
    wait_content(&all, |h| format!("i am {}, v4\n", h.name));
    let o = deploy(&url, &["--resume"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no rollout to resume"),
        "{}",
        text(&o)
    );
}

/// mgmt's scheduler on real processes: three hosts join the pool `web` with a `schedule`
/// resource (max 2, TTL 2 s) and write `world.schedule("web")` to a file; every host agrees
/// on two hosts, and when a chosen host is killed (SIGKILL: no withdrawal) the survivors
/// are chosen within the TTL plus the time to notice. mgmt's older form,
/// `world.schedule(ns, opts)`, joins from the function.
#[test]
fn schedule_picks_exactly_n_live_hosts_and_replaces_a_killed_one() {
    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let src = tempfile::tempdir().unwrap();
    let mut hosts: Vec<Host> = ["h1", "h2", "h3"]
        .iter()
        .map(|n| Host::start(n, &url, None, &[]))
        .collect();
    let main = "import \"golang\"\nimport \"sys\"\nimport \"world\"\n\
        $root = sys.getenv(\"TEND_ROOT\")\n\
        schedule \"web\" {\n\tmax => 2,\n\tttl => 2,\n}\n\
        file \"${root}/web\" {\n\tcontent => golang.template(\"{{ . }}\", world.schedule(\"web\")),\n}\n\
        $solo = world.schedule(\"solo\", struct{strategy => \"alpha\", max => 1, ttl => 2})\n\
        file \"${root}/solo\" {\n\tcontent => golang.template(\"{{ . }}\", $solo),\n}\n";
    let prog = program(src.path(), "sched", main);
    let o = deploy(&url, &[prog.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // Every host shows the same choice of `n` hosts (the file may read `[]` before the first).
    let agreed = |hs: &[&Host], what: &str, n: usize| -> String {
        let mut seen = String::new();
        let ok = wait_for(WITHIN, || {
            let all: Vec<Option<String>> = hs.iter().map(|h| h.read(what)).collect();
            match &all[0] {
                Some(first) if all.iter().all(|x| x.as_ref() == Some(first)) => {
                    seen = first.clone();
                    first
                        .trim_matches(|c| c == '[' || c == ']')
                        .split_whitespace()
                        .count()
                        == n
                }
                _ => false,
            }
        });
        let logs: Vec<String> = hs.iter().map(|h| h.log()).collect();
        assert!(ok, "the hosts do not agree on {what}: {logs:#?}");
        seen
    };
    let refs: Vec<&Host> = hosts.iter().collect();
    let chosen = agreed(&refs, "web", 2);
    assert!(chosen.starts_with('[') && chosen.ends_with(']'), "{chosen}");
    let names: Vec<String> = chosen
        .trim_matches(|c| c == '[' || c == ']')
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 2, "{chosen}");
    assert_eq!(agreed(&refs, "solo", 1), "[h1]");

    // Kill one chosen host: the two others are the new choice, on both.
    let victim = hosts.iter().position(|h| h.name == names[0]).unwrap();
    hosts[victim].kill();
    let killed = std::time::Instant::now();
    let survivors: Vec<&Host> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, h)| h)
        .collect();
    let want = format!(
        "[{}]",
        survivors
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ok = wait_for(WITHIN, || {
        survivors
            .iter()
            .all(|h| h.read("web").as_deref() == Some(want.as_str()))
    });
    let took = killed.elapsed();
    let logs: Vec<String> = survivors.iter().map(|h| h.log()).collect();
    assert!(ok, "no replacement for {}: {logs:#?}", names[0]);
    eprintln!("a killed scheduled host was replaced in {took:?} (TTL 2 s)");
    assert!(
        took < Duration::from_secs(8),
        "replaced after {took:?}, TTL 2 s"
    );
}

/// Reads `KEY=value` lines of an environment file written by `tend cluster auth`.
fn env_file(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {}", path.display()))
            .to_string()
    };
    (get("TEND_ETCD_USER"), get("TEND_ETCD_PASSWORD"))
}

/// etcd's RBAC, set up by `tend cluster auth`, enforced by etcd: a host reads only what is
/// exported to it or to everyone, writes only its own records, and cannot deploy; what h1
/// exports to h2 still reaches h2 (and only h2). Every refusal asserted is etcd's own
/// (`etcdserver: permission denied` from a raw store call), not a filter of tend's.
#[test]
fn etcd_rbac_gives_each_host_only_its_own() {
    use std::os::unix::fs::PermissionsExt;
    use tend_world::store::etcd::{Etcd, EtcdConfig};
    use tend_world::store::{KeyRange, Op, Store, Txn};

    let etcd = EtcdServer::start().expect("etcd");
    let url = etcd.client_url.clone();
    let creds = tempfile::tempdir().unwrap();
    let d = creds.path().join("creds");
    let o = tend(&[
        "cluster",
        "auth",
        "init",
        "--etcd",
        &url,
        "--out-dir",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["root.env", "controller.env"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // Once only: a second init is refused and changes nothing.
    let again = tend(&[
        "cluster",
        "auth",
        "init",
        "--etcd",
        &url,
        "--out-dir",
        creds.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("already enabled"), "{}", text(&again));
    let (root, root_pw) = env_file(&d.join("root.env"));
    let (ctl, ctl_pw) = env_file(&d.join("controller.env"));
    let mut host_creds = Vec::new();
    for h in ["h1", "h2", "h3"] {
        let out = d.join(format!("{h}.env"));
        let o = tend(&[
            "cluster",
            "auth",
            "add-host",
            h,
            "--etcd",
            &url,
            "--etcd-user",
            &root,
            "--etcd-password",
            &root_pw,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        host_creds.push(env_file(&out));
    }
    // Only root manages users: the controller is told what it lacks.
    let o = tend(&[
        "cluster",
        "auth",
        "add-host",
        "h4",
        "--etcd",
        &url,
        "--etcd-user",
        &ctl,
        "--etcd-password",
        &ctl_pw,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("needs etcd's root"), "{}", text(&o));
    let hosts: Vec<Host> = ["h1", "h2", "h3"]
        .iter()
        .zip(&host_creds)
        .map(|(n, (u, p))| Host::start(n, &url, None, &["--etcd-user", u, "--etcd-password", p]))
        .collect();

    // Without credentials nobody deploys; with a host's, neither; the controller does.
    let src = tempfile::tempdir().unwrap();
    let p = program(src.path(), "exports", EXPORTS);
    let anon = deploy(&url, &[p.to_str().unwrap()]);
    assert!(!anon.status.success(), "{}", text(&anon));
    let as_host = deploy(
        &url,
        &[
            p.to_str().unwrap(),
            "--etcd-user",
            &host_creds[2].0,
            "--etcd-password",
            &host_creds[2].1,
        ],
    );
    assert!(!as_host.status.success(), "{}", text(&as_host));
    assert!(
        text(&as_host).contains("permission denied"),
        "{}",
        text(&as_host)
    );
    let o = deploy(
        &url,
        &[
            p.to_str().unwrap(),
            "--etcd-user",
            &ctl,
            "--etcd-password",
            &ctl_pw,
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(
        o.status.success(),
        "{}\n{:#?}",
        text(&o),
        hosts.iter().map(|h| h.log()).collect::<Vec<_>>()
    );

    // h2 collects what h1 addressed to it; h3 only what went to everyone.
    assert!(
        wait_for(WITHIN, || hosts[1].read("to-h2").as_deref()
            == Some("for h2\n")),
        "{}",
        hosts[1].log()
    );
    assert!(
        wait_for(WITHIN, || hosts[2].read("to-all").as_deref()
            == Some("for all\n")),
        "{}",
        hosts[2].log()
    );
    assert_eq!(hosts[2].read("to-h2"), None);

    // h3's credentials against etcd directly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = EtcdConfig::new(vec![url.clone()]);
        cfg.user = Some(host_creds[2].clone());
        cfg.retries = 1;
        let h3 = Etcd::connect(cfg).await.expect("h3 connects");
        let keys = tend_world::keys::Keys::new("/tend");
        let denied = |r: Result<(), tend_world::StoreError>, what: &str| match r {
            Err(e @ tend_world::StoreError::PermissionDenied { .. }) => {
                assert!(
                    e.to_string().contains("etcdserver: permission denied"),
                    "{what}: {e}"
                );
            }
            other => panic!("{what}: not refused by etcd: {other:?}"),
        };
        // Reading the exports addressed to h2.
        denied(
            h3.range(KeyRange::prefix(keys.exports_to("h2")))
                .await
                .map(|_| ()),
            "h3 reading h2's exports",
        );
        // Writing an export as h1, to everyone or to h2.
        for to in ["*", "h2"] {
            let forged = Op::put(keys.export(to, "file", "h1", "forged"), vec![1]);
            denied(
                h3.txn(Txn::ops(vec![forged])).await.map(|_| ()),
                "h3 exporting as h1",
            );
        }
        // Writing a deploy.
        let d = Op::put(keys.deploy_latest(), vec![1]);
        denied(
            h3.txn(Txn::ops(vec![d])).await.map(|_| ()),
            "h3 writing a deploy",
        );
        // Another host's registration.
        let reg = Op::put(keys.host("h1"), vec![1]);
        denied(
            h3.txn(Txn::ops(vec![reg])).await.map(|_| ()),
            "h3 registering as h1",
        );
        // What h3 may do: read what is for everyone and for itself, export as itself.
        h3.range(KeyRange::prefix(keys.exports_to("*")))
            .await
            .expect("to everyone");
        h3.range(KeyRange::prefix(keys.exports_to("h3")))
            .await
            .expect("to h3");
        let own = keys.export("h2", "file", "h3", "mine");
        h3.txn(Txn::ops(vec![Op::put(own.clone(), vec![1])]))
            .await
            .expect("h3 exports to h2 as itself");
        h3.txn(Txn::ops(vec![Op::Delete(KeyRange::key(own))]))
            .await
            .unwrap();
    });
}
