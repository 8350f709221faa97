//! `memgate key`, `memgate policy` and `memgate token` run as real processes, against the
//! real stock `minisign` binary and the real `pyseto` library (through python3), in both
//! directions. Nothing stands in for either tool: if one is missing the test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use memgate_policy::keys::{PublicKey, SecretKey};
use memgate_policy::minisign;

const MEMGATE: &str = env!("CARGO_BIN_EXE_memgate");

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed? scripts/deps.sh test): {e}"))
}

fn memgate(args: &[&str]) -> Output {
    run(MEMGATE, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts a user error: non-zero exit, exactly one line on stderr, no panic. Returns it.
fn user_error(o: Output) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {} stderr: {err}",
        stdout(&o)
    );
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("memgate: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err
}

/// Runs memgate with `args` and asserts success; returns stdout.
fn mg_ok(args: &[&str]) -> String {
    ok(memgate(args))
}

/// Runs memgate with `args` and asserts a one-line user error; returns it.
fn mg_err(args: &[&str]) -> String {
    user_error(memgate(args))
}

/// Runs memgate with `args` and asserts a one-line user error containing `needle`.
fn mg_err_has(args: &[&str], needle: &str) {
    let err = mg_err(args);
    assert!(err.contains(needle), "{err}");
}

/// `args` followed by `extra`, as one argument list.
fn with<'a>(args: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(extra).copied().collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let k = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for (kind, name) in [("admin", "admin"), ("issuer", "issuer"), ("peer", "peer")] {
            ok(k.gen(kind, name, &[]));
        }
        k
    }

    /// Runs `memgate key gen` for `kind` into this directory as `name`, plus `extra` flags.
    fn gen(&self, kind: &str, name: &str, extra: &[&str]) -> Output {
        let out = p(self.dir.path());
        memgate(&with(
            &["key", "gen", "--kind", kind, "--out", out, "--name", name],
            extra,
        ))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The path of `name` in this directory, as a command-line argument.
    fn arg(&self, name: &str) -> String {
        p(&self.path(name)).to_string()
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A valid policy trusting the issuer key, written to `name`.
    fn policy(&self, name: &str, serial: u64) -> PathBuf {
        let text = format!(
            "version = 1\nbroker = \"broker-1\"\nserial = {serial}\n\n[[issuer]]\nname = \"orch\"\n\
             key = \"{}\"\ncgroups = [\"/vms/*\"]\nuids = [1000]\nmax_bytes = \"1G\"\nmax_lease = 60\n",
            self.read("issuer.pub")
        );
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// `memgate token mint` with key file `key` and target `target` (uid 1, audience `b`,
    /// 5 s lease, 4096 bytes) that must fail with one line; returns it.
    fn mint_err(&self, key: &str, target: &str) -> String {
        mg_err(&[
            "token",
            "mint",
            "--key",
            &self.arg(key),
            "--issuer",
            "orch",
            "--aud",
            "b",
            "--sub",
            "1",
            "--target",
            target,
            "--peer",
            &self.arg("peer.pub"),
            "--lease",
            "5",
            "--max-bytes",
            "4096",
        ])
    }
}

/// `memgate policy verify --key KEY EXTRA... POLICY`.
fn verify_args<'a>(key: &'a str, extra: &[&'a str], policy: &'a str) -> Vec<&'a str> {
    let mut args = with(&["policy", "verify", "--key", key], extra);
    args.push(policy);
    args
}

/// `memgate policy sign --key KEY EXTRA... POLICY`.
fn sign_args<'a>(key: &'a str, extra: &[&'a str], policy: &'a str) -> Vec<&'a str> {
    let mut args = with(&["policy", "sign", "--key", key], extra);
    args.push(policy);
    args
}

/// `minisign -V` of `msg` against public key file `pk`.
fn minisign_verify(pk: &Path, msg: &Path) -> Output {
    run("minisign", &["-V", "-p", p(pk), "-m", p(msg)])
}

#[test]
fn key_gen_writes_both_formats_with_private_modes() {
    let k = Keys::new();
    for name in ["admin.key", "issuer.key", "peer.key"] {
        let mode = fs::metadata(k.path(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    // Admin: minisign key files; issuer and peer: PASERK.
    let admin_sk = minisign::SecretKey::from_file_text(&k.read("admin.key")).unwrap();
    let admin_pk = minisign::PublicKey::from_file_text(&k.read("admin.pub")).unwrap();
    assert_eq!(admin_sk.public(), admin_pk);
    for name in ["issuer", "peer"] {
        let sk = SecretKey::from_paserk(&k.read(&format!("{name}.key"))).unwrap();
        let pk = PublicKey::from_paserk(&k.read(&format!("{name}.pub"))).unwrap();
        assert_eq!(sk.public(), pk);
    }
    // Existing keys are not overwritten without --force, and the secret is unchanged.
    let before = k.read("issuer.key");
    let err = user_error(k.gen("issuer", "issuer", &[]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(k.read("issuer.key"), before);
    let json = ok(k.gen("issuer", "issuer", &["--force", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "issuer");
    assert_ne!(k.read("issuer.key"), before);
    assert_eq!(v["public_key"], k.read("issuer.pub"));
}

#[test]
fn stock_minisign_signatures_verify_in_memgate() {
    let k = Keys::new();
    let policy = k.policy("policy.toml", 4);
    let (pk, sk) = (k.path("ms.pub"), k.path("ms.key"));
    let (pol, pka, ska) = (p(&policy), p(&pk), p(&sk));
    ok(run("minisign", &["-G", "-W", "-p", pka, "-s", ska]));
    // Default (prehashed ED) and legacy (Ed) signatures with a custom trusted comment.
    ok(run(
        "minisign",
        &["-S", "-s", ska, "-m", pol, "-t", "serial 4 from ops"],
    ));
    let legacy = k.arg("legacy.minisig");
    ok(run(
        "minisign",
        &["-S", "-l", "-s", ska, "-m", pol, "-x", &legacy],
    ));
    let out = mg_ok(&verify_args(pka, &["--json"], pol));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["serial"], 4);
    assert_eq!(v["trusted_comment"], "serial 4 from ops");
    let pk_line = fs::read_to_string(&pk)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    // The bare base64 key works too, and so does the legacy signature.
    mg_ok(&verify_args(&pk_line, &["--sig", &legacy], pol));

    // Tampering: one policy byte; the trusted comment; a key id from another key.
    let original = fs::read_to_string(&policy).unwrap();
    fs::write(&policy, original.replace("serial = 4", "serial = 5")).unwrap();
    mg_err_has(&verify_args(pka, &[], pol), "signature does not verify");
    fs::write(&policy, &original).unwrap();
    let sig_path = k.path("policy.toml.minisig");
    let sig = fs::read_to_string(&sig_path).unwrap();
    fs::write(
        &sig_path,
        sig.replace("serial 4 from ops", "serial 9 from ops"),
    )
    .unwrap();
    mg_err_has(&verify_args(pka, &[], pol), "trusted comment");
    fs::write(&sig_path, &sig).unwrap();
    mg_err_has(&verify_args(&k.arg("admin.pub"), &[], pol), "key id");
    // Rollback: a validly signed policy that is not newer than the one in force.
    mg_err_has(&verify_args(pka, &["--newer-than", "4"], pol), "rollback");
    mg_ok(&verify_args(pka, &["--newer-than", "3"], pol));
    // A key made by `minisign -G -W` signs with memgate too.
    mg_ok(&sign_args(ska, &["--force", "--sig", &legacy], pol));
    mg_ok(&verify_args(pka, &["--sig", &legacy], pol));
}

#[test]
fn memgate_signatures_verify_with_stock_minisign() {
    let k = Keys::new();
    let policy = k.policy("policy.toml", 7);
    let admin_pub = k.path("admin.pub");
    let admin_key = k.arg("admin.key");
    for extra in [&[][..], &["--legacy", "--force"][..]] {
        mg_ok(&sign_args(&admin_key, extra, p(&policy)));
        let out = ok(minisign_verify(&admin_pub, &policy));
        assert!(out.contains("serial:7"), "{out}");
        mg_ok(&verify_args(p(&admin_pub), &[], p(&policy)));
    }
    // minisign rejects a tampered policy signed by memgate.
    fs::write(&policy, fs::read_to_string(&policy).unwrap() + "# edited\n").unwrap();
    let o = minisign_verify(&admin_pub, &policy);
    assert!(!o.status.success());
    // The stock tool signs with the secret key file memgate wrote (unencrypted: no prompt).
    let msg = k.path("other.txt");
    fs::write(&msg, "hello\n").unwrap();
    ok(run("minisign", &["-S", "-s", &admin_key, "-m", p(&msg)]));
    ok(minisign_verify(&admin_pub, &msg));
    // An invalid policy is never signed.
    let bad = k.path("bad.toml");
    fs::write(
        &bad,
        "version = 1\nbroker = \"b\"\nserial = 1\ncolour = \"red\"\n",
    )
    .unwrap();
    let err = mg_err(&sign_args(&admin_key, &[], p(&bad)));
    assert!(
        err.contains("colour") && err.contains("refusing to sign"),
        "{err}"
    );
    assert!(!k.path("bad.toml.minisig").exists());
}

const PYSETO_MINT: &str = r#"
import json, sys, datetime, pyseto
from pyseto import Key
sk = Key.from_paserk(open(sys.argv[1]).read().strip())
peer = open(sys.argv[2]).read().strip()
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
claims = {
    "iss": "orch", "sub": "1000", "aud": "broker-1", "jti": "pyseto-1",
    "nbf": now.isoformat(), "iat": now.isoformat(),
    "exp": (now + datetime.timedelta(seconds=120)).isoformat(),
    "target": {"cgroup": "/vms/web", "pid": 77}, "access": "read",
    "max_bytes": 4096, "lease": 30, "peer": peer,
}
kid = Key.from_paserk(open(sys.argv[3]).read().strip()).to_paserk_id()
tok = pyseto.encode(sk, json.dumps(claims).encode(), footer=json.dumps({"kid": kid}).encode())
print(tok.decode())
"#;

const PYSETO_VERIFY: &str = r#"
import json, sys, pyseto
from pyseto import Key
pk = Key.from_paserk(open(sys.argv[1]).read().strip())
tok = sys.stdin.read().strip()
d = pyseto.decode(pk, tok, deserializer=json)
print(json.dumps({"payload": d.payload, "footer": d.footer if isinstance(d.footer, dict) else json.loads(d.footer), "kid": pk.to_paserk_id()}))
"#;

#[test]
fn pyseto_minted_token_verifies_in_memgate() {
    let k = Keys::new();
    let (issuer_pub, peer_pub) = (k.arg("issuer.pub"), k.arg("peer.pub"));
    let tok = ok(run(
        "python3",
        &[
            "-c",
            PYSETO_MINT,
            &k.arg("issuer.key"),
            &peer_pub,
            &issuer_pub,
        ],
    ));
    let tok = tok.trim();
    assert!(tok.starts_with("v4.public."), "{tok}");
    let out = mg_ok(&[
        "token",
        "verify",
        "--key",
        &issuer_pub,
        "--aud",
        "broker-1",
        "--json",
        tok,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["claims"]["target"]["pid"], 77);
    assert_eq!(v["claims"]["peer"], k.read("peer.pub"));
    // The engine's policy-based verification accepts it too, and finds the issuer by kid.
    let text = fs::read_to_string(k.policy("p.toml", 1)).unwrap();
    let policy = memgate_policy::Policy::parse(&text).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let vt = memgate_policy::token::verify(tok, &policy, now, memgate_policy::token::DEFAULT_SKEW)
        .unwrap();
    assert_eq!(vt.uid, 1000);
    let issuer_pk = PublicKey::from_paserk(&k.read("issuer.pub")).unwrap();
    assert_eq!(
        vt.kid,
        Some(issuer_pk.pid()),
        "pyseto's PASERK id equals ours"
    );
    // The wrong issuer key, or another audience, is refused.
    mg_err_has(
        &["token", "verify", "--key", &peer_pub, tok],
        "token_signature_invalid",
    );
    mg_err_has(
        &[
            "token",
            "verify",
            "--key",
            &issuer_pub,
            "--aud",
            "broker-2",
            tok,
        ],
        "audience",
    );
}

#[test]
fn memgate_minted_token_verifies_in_pyseto() {
    let k = Keys::new();
    let issuer_pub = k.arg("issuer.pub");
    let tok = mg_ok(&[
        "token",
        "mint",
        "--key",
        &k.arg("issuer.key"),
        "--issuer",
        "orch",
        "--aud",
        "broker-1",
        "--sub",
        "1000",
        "--target",
        "/vms/web",
        "--pid",
        "42",
        "--peer",
        &k.arg("peer.pub"),
        "--lease",
        "60",
        "--max-bytes",
        "1G",
        "--access",
        "read",
    ]);
    let tok = tok.trim().to_string();
    let mut child = Command::new("python3")
        .args(["-c", PYSETO_VERIFY, &issuer_pub])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with pyseto) must be installed: scripts/deps.sh test");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), tok.as_bytes()).unwrap();
    let out = ok(child.wait_with_output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["payload"];
    assert_eq!(c["iss"], "orch");
    assert_eq!(c["sub"], "1000");
    assert_eq!(c["aud"], "broker-1");
    assert_eq!(c["target"]["cgroup"], "/vms/web");
    assert_eq!(c["target"]["pid"], 42);
    assert_eq!(c["max_bytes"], 1u64 << 30);
    assert_eq!(c["lease"], 60);
    assert_eq!(c["peer"], k.read("peer.pub"));
    // pyseto checked exp/nbf/iat as RFC 3339 times; the footer kid is pyseto's PASERK id.
    assert_eq!(v["footer"]["kid"], v["kid"]);
    // memgate verifies its own token, and inspect says it did not verify anything.
    mg_ok(&["token", "verify", "--key", &issuer_pub, &tok]);
    let out = mg_ok(&["token", "inspect", &tok]);
    assert!(out.starts_with("NOT VERIFIED"), "{out}");
    let out = mg_ok(&["token", "inspect", "--json", &tok]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["claims"]["jti"].as_str().unwrap().len(), 32);
}

#[test]
fn read_commands_speak_json_and_errors_are_one_line() {
    let k = Keys::new();
    let policy = k.policy("policy.toml", 2);
    let v: serde_json::Value =
        serde_json::from_str(&mg_ok(&["policy", "show", "--json", p(&policy)])).unwrap();
    assert_eq!(v["serial"], 2);
    assert_eq!(v["signature_checked"], false);
    assert_eq!(v["issuers"][0]["max_bytes"], 1u64 << 30);
    let human = mg_ok(&["policy", "show", p(&policy)]);
    assert!(human.contains("NOT checked"), "{human}");

    let bad = k.path("bad.toml");
    fs::write(
        &bad,
        "version = 1\nbroker = \"b\"\nserial = 1\n[limits]\ngrants = 3\n",
    )
    .unwrap();
    let err = mg_err(&["policy", "show", p(&bad)]);
    assert!(err.contains("line 5") && err.contains("grants"), "{err}");
    mg_err_has(&["policy", "show", &k.arg("missing.toml")], "missing.toml");
    mg_err_has(
        &verify_args(&k.arg("admin.pub"), &[], p(&policy)),
        "policy.toml.minisig",
    );
    mg_err_has(
        &["token", "inspect", "v4.local.AAAA"],
        "unsupported purpose",
    );
    let err = mg_err(&["token", "inspect", "v4.public.@@@"]);
    assert!(err.contains("base64") || err.contains("encoding"), "{err}");
    // Keys of the wrong kind are named as such.
    let err = k.mint_err("admin.key", "/vms/a");
    assert!(err.contains("minisign"), "{err}");
    mg_err_has(
        &sign_args(&k.arg("issuer.key"), &[], p(&policy)),
        "issuer.key",
    );
    let err = k.mint_err("issuer.key", "/vms/../etc");
    assert!(err.contains("--target"), "{err}");
    // Usage errors come from clap with its own exit code 2, still without a panic.
    let o = memgate(&["token", "mint", "--max-bytes", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"));
}

/// The documented workflow (edit, bump serial, re-sign) works without `--force` when the
/// existing signature is by the same admin key; another admin's signature is kept unless
/// `--force` is given.
#[test]
fn resigning_an_edited_policy_with_the_same_key_needs_no_force() {
    let k = Keys::new();
    let policy = k.policy("policy.toml", 1);
    let admin_key = k.arg("admin.key");
    mg_ok(&sign_args(&admin_key, &[], p(&policy)));
    let policy = k.policy("policy.toml", 2);
    mg_ok(&sign_args(&admin_key, &[], p(&policy)));
    let out = mg_ok(&verify_args(
        &k.arg("admin.pub"),
        &["--newer-than", "1"],
        p(&policy),
    ));
    assert!(out.contains("serial 2"), "{out}");
    // Another admin key does not silently replace the signature.
    ok(k.gen("admin", "admin2", &[]));
    let before = fs::read_to_string(k.path("policy.toml.minisig")).unwrap();
    let admin2_key = k.arg("admin2.key");
    let err = mg_err(&sign_args(&admin2_key, &[], p(&policy)));
    assert!(
        err.contains("another admin key") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(k.path("policy.toml.minisig")).unwrap(),
        before
    );
    mg_ok(&sign_args(&admin2_key, &["--force"], p(&policy)));
}
