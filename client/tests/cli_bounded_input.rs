//! Inputs a fresh user can get wrong: every file or stdin the CLI reads is bounded (a
//! `/dev/zero` argument fails at once with one line instead of eating memory), token
//! arguments accept the same forms everywhere, and a grant document whose regions cannot be
//! served is refused before anything connects.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MEMGATE: &str = env!("CARGO_BIN_EXE_memgate");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memgate-bi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs memgate with a 20 s safety net, optionally feeding `stdin_from` (a file) on stdin.
fn memgate(args: &[&str], stdin_from: Option<&str>) -> (Output, Duration) {
    let stdin = match stdin_from {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    };
    let t = Instant::now();
    let out = Command::new("timeout")
        .arg("-s")
        .arg("KILL")
        .arg("20")
        .arg(MEMGATE)
        .args(args)
        .env("MEMGATE_SOCKET", "/nonexistent/memgate-test.sock")
        .stdin(stdin)
        .output()
        .unwrap();
    (out, t.elapsed())
}

/// Asserts: fast, exit 1, exactly one stderr line containing `needle`.
fn one_line_error(args: &[&str], stdin_from: Option<&str>, needle: &str) -> String {
    let (o, took) = memgate(args, stdin_from);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.contains(needle), "{args:?}: {err}");
    err
}

#[test]
fn dev_zero_is_refused_everywhere_at_once() {
    let d = tmpdir("zero");
    let key = d.join("k.key");
    let k = memgate_policy::keys::SecretKey::generate().unwrap();
    std::fs::write(&key, k.to_paserk()).unwrap();
    let key = key.to_str().unwrap();
    let big = "is larger than 1 MiB; is this the right file?";
    let small = "is larger than 64 KiB; is this the right file?";
    one_line_error(&["policy", "show", "/dev/zero"], None, big);
    one_line_error(
        &["policy", "verify", "--key", "/dev/zero", "x.toml"],
        None,
        small,
    );
    one_line_error(&["policy", "sign", "--key", key, "/dev/zero"], None, big);
    one_line_error(&["token", "inspect", "/dev/zero"], None, small);
    one_line_error(&["token", "inspect", "-"], Some("/dev/zero"), small);
    one_line_error(
        &["token", "verify", "--key", "/dev/zero", "v4.public.x"],
        None,
        small,
    );
    one_line_error(
        &[
            "token",
            "mint",
            "--key",
            "/dev/zero",
            "--issuer",
            "i",
            "--aud",
            "a",
            "--sub",
            "0",
            "--target",
            "/a",
            "--peer",
            "k4.public.x",
            "--lease",
            "1",
            "--max-bytes",
            "1",
        ],
        None,
        small,
    );
    one_line_error(
        &["export", "--pid", "1", "--token", "@/dev/zero"],
        None,
        small,
    );
    one_line_error(
        &["export", "--pid", "1", "--token", "/dev/zero"],
        None,
        small,
    );
    one_line_error(
        &[
            "fault-serve",
            "--mirror",
            "--grant",
            "/dev/zero",
            "--peer-key",
            key,
        ],
        None,
        big,
    );
    one_line_error(
        &["fault-serve", "--mirror", "--grant", "-", "--peer-key", key],
        Some("/dev/zero"),
        big,
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn export_reads_a_token_file_like_token_inspect() {
    let d = tmpdir("tokfile");
    let f = d.join("tok");
    std::fs::write(&f, "v4.public.not-a-real-token\n").unwrap();
    // The token file is read (not sent as the token text "…/tok"): the failure is the
    // missing broker, reached only after the token argument was accepted.
    let err = one_line_error(
        &[
            "export",
            "--pid",
            "1",
            "--lease",
            "60",
            "--token",
            f.to_str().unwrap(),
            "--socket",
            "/nonexistent/x.sock",
        ],
        None,
        "is memgated running? (socket /nonexistent/x.sock)",
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(!err.contains("neither a token"), "{err}");
    one_line_error(
        &["export", "--pid", "1", "--token", "no-such-token-file"],
        None,
        "neither a token",
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn grant_json(regions: &str) -> String {
    format!(
        r#"{{"id":"000102030405060708090a0b0c0d0e0f","endpoint":"tcp:127.0.0.1:9","peer":"k4.public.AAAA","access":"read","expires_unix":99999999999,"regions":[{regions}]}}"#
    )
}

#[test]
fn unservable_grants_are_refused_before_connecting() {
    let d = tmpdir("grant");
    let key = d.join("p.key");
    let k = memgate_policy::keys::SecretKey::generate().unwrap();
    std::fs::write(&key, k.to_paserk()).unwrap();
    let cases = [
        ("", "no regions"),
        (
            r#"{"addr":4096,"len":1,"rkey":1}"#,
            "not a non-zero multiple of the page size",
        ),
        (r#"{"addr":4097,"len":4096,"rkey":1}"#, "not page-aligned"),
        (
            r#"{"addr":4096,"len":18446744073709547520,"rkey":1}"#,
            "beyond the user address space",
        ),
        (
            r#"{"addr":4096,"len":8192,"rkey":1},{"addr":8192,"len":4096,"rkey":2}"#,
            "overlap",
        ),
    ];
    for (i, (regions, needle)) in cases.iter().enumerate() {
        let g = d.join(format!("g{i}.json"));
        std::fs::File::create(&g)
            .unwrap()
            .write_all(grant_json(regions).as_bytes())
            .unwrap();
        one_line_error(
            &[
                "fault-serve",
                "--mirror",
                "--grant",
                g.to_str().unwrap(),
                "--peer-key",
                key.to_str().unwrap(),
            ],
            None,
            needle,
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `--mirror --no-prefetch` could never finish (nothing faults on the mirror) and so never
/// noticed a revoked grant: it is refused before anything is read or connected.
#[test]
fn mirror_without_prefetch_is_refused() {
    one_line_error(
        &[
            "fault-serve",
            "--mirror",
            "--no-prefetch",
            "--grant",
            "/nonexistent/g.json",
        ],
        None,
        "--mirror needs prefetch",
    );
}
