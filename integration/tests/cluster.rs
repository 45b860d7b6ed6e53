//! Several real `tend run` hosts on one real etcd, driven by a controller running
//! `tend deploy`: deploys reach every host, a bad deploy is refused or rejected, and a stale
//! parent is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tend_integration::{tend, wait_for, Host};
use tend_world::testkit::EtcdServer;

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
