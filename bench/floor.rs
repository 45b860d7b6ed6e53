//! The floor for the benchmark: the same file work as `tend run`, done by a plain loop with
//! no engine. Built by bench/run.sh with `rustc -O` (std only).
//!
//! Usage:
//!   floor write DIR N          write DIR/f<i> = "hello <i>\n", mode 0644, i in 0..N
//!   floor write-atomic DIR N   the same through a temporary file, fsync and rename
//!   floor check DIR N          read every file and its mode, and compare (the "in state" work)
//!   floor chains DIR C L       C chains of L files: DIR/c<c>_f<l> (writes C*L files)

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn write_plain(path: &Path, content: &str) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o644)).unwrap();
    f.sync_all().unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: floor write|write-atomic|check DIR N | floor chains DIR C L");
        std::process::exit(2)
    };
    if args.len() < 4 {
        usage();
    }
    let dir = Path::new(&args[2]);
    let n: usize = args[3].parse().unwrap_or_else(|_| usage());
    match args[1].as_str() {
        "write" | "write-atomic" => {
            fs::create_dir_all(dir).unwrap();
            for i in 0..n {
                let p = dir.join(format!("f{i}"));
                let c = format!("hello {i}\n");
                if args[1] == "write" {
                    write_plain(&p, &c)
                } else {
                    write_atomic(&p, &c)
                }
            }
            if args[1] == "write-atomic" {
                fs::File::open(dir).unwrap().sync_all().unwrap();
            }
        }
        "check" => {
            let mut bad = 0;
            for i in 0..n {
                let p = dir.join(format!("f{i}"));
                let c = fs::read(&p).unwrap_or_default();
                let mode = fs::metadata(&p).map(|m| m.permissions().mode() & 0o7777);
                if c != format!("hello {i}\n").as_bytes() || mode.ok() != Some(0o644) {
                    bad += 1;
                }
            }
            if bad > 0 {
                eprintln!("floor: {bad} files out of state");
                std::process::exit(1);
            }
        }
        "chains" => {
            let l: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
            fs::create_dir_all(dir).unwrap();
            for c in 0..n {
                for k in 0..l {
                    let p = dir.join(format!("c{c}_f{k}"));
                    write_plain(&p, &format!("hello {c} {k}\n"));
                }
            }
        }
        _ => usage(),
    }
}
