//! TLS on the acquirer listener (DESIGN 2.6, issue 13) against the real binary: a test CA and
//! certificates made here by rcgen (no key is committed), a client with a certificate from the
//! CA approved, one with none, with one from another CA, or speaking plain TCP refused, and a
//! certificate that speaks for one acquirer only.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use adapters::{DialectName, FrameHeader, Message};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA that signs certificates.
struct Authority {
    certificate: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let certificate = params.self_signed(&key).unwrap();
    Authority {
        certificate,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate of `authority` for `common_name` (none when empty): (certificate PEM, key PEM).
fn issue(authority: &Authority, common_name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names = if server {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if common_name.is_empty() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, "an organisation, no common name");
    } else {
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
    }
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let certificate = params.signed_by(&key, &authority.issuer).unwrap();
    (certificate.pem(), key.serialize_pem())
}

fn write(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A blocking TLS client link: frames ISO 8583 messages like [`Link`].
struct TlsLink {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsLink {
    /// Connects and completes the handshake; the error when the switch refuses it.
    fn connect(
        switch: &Switch,
        ca: &Authority,
        client: Option<&(String, String)>,
    ) -> Result<TlsLink, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.certificate.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((certificate, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(certificate.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let connection = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let socket = TcpStream::connect(switch.addr).unwrap();
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, socket);
        // The handshake; with TLS 1.3 a refused client certificate shows on the first read.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsLink { stream })
    }

    fn call(&mut self, message: &Message<'_>) -> Result<Message<'static>, std::io::Error> {
        let dialect = DialectName::Default.dialect();
        let mut body = Vec::new();
        dialect.encode(message, &mut body).unwrap();
        let mut frame = Vec::new();
        FrameHeader::Binary2.write(body.len(), &mut frame).unwrap();
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;
        self.stream.flush()?;
        let mut header = [0u8; 2];
        self.stream.read_exact(&mut header)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(header))];
        self.stream.read_exact(&mut reply)?;
        Ok(dialect.decode(&reply).unwrap().into_owned())
    }
}

#[test]
fn a_tls_listener_takes_certified_clients_only_and_a_certificate_speaks_for_one_acquirer() {
    let ca = authority("switch test CA");
    let rogue = authority("another CA");
    let (server_certificate, server_key) = issue(&ca, "switch", true);
    let ours = issue(&ca, "acquirer-123456", false);
    let theirs = issue(&ca, "acquirer-654321", false);
    let unlisted = issue(&ca, "nobody", false);
    let forged = issue(&rogue, "acquirer-123456", false);
    let nameless = issue(&ca, "", false);
    let config = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nhandshake_timeout_seconds = 1\n\n\
         [[acquirers]]\nid = \"123456\"\nname = \"Demo acquirer\"\nclient_cert_cn = \"acquirer-123456\"\n\n\
         [[acquirers]]\nid = \"654321\"\nname = \"Second acquirer\"\nclient_cert_cn = \"acquirer-654321\"\n\n\
         [[acquirers]]\nid = \"777777\"\nname = \"Acquirer without a certificate\"\n\n\
         [demo]\naccounts = 2000\n",
        write("server.pem", &server_certificate),
        write("server.key", &server_key),
        write("ca.pem", &ca.certificate.pem()),
    );
    let config = config_file("tls", &config);
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    switch.wait_for_output("listening for acquirers on");

    // A client with a certificate from the configured CA, naming its own acquirer: approved.
    let mut link = TlsLink::connect(&switch, &ca, Some(&ours)).unwrap();
    let hold = request("0100", &demo_pan(700), "000000", 100);
    let answer = link.call(&hold).unwrap();
    assert_eq!(code(&answer), "00");
    assert!(answer.has(38));
    // Naming another configured acquirer on that connection: 58.
    let mut other = request("0100", &demo_pan(701), "000000", 100);
    other.set(32, b"654321".to_vec());
    assert_eq!(code(&link.call(&other).unwrap()), "58");
    let mut keyless = request("0100", &demo_pan(702), "000000", 100);
    keyless.set(32, b"777777".to_vec());
    assert_eq!(
        code(&link.call(&keyless).unwrap()),
        "58",
        "a certified connection speaks for its acquirer alone"
    );
    // The other acquirer's certificate speaks for it, and not for ours.
    let mut second = TlsLink::connect(&switch, &ca, Some(&theirs)).unwrap();
    assert_eq!(code(&second.call(&other).unwrap()), "00");
    let foreign = request("0100", &demo_pan(703), "000000", 100);
    assert_eq!(code(&second.call(&foreign).unwrap()), "58");
    // A certificate of the CA that no acquirer names: only acquirers without a certificate.
    let mut anonymous = TlsLink::connect(&switch, &ca, Some(&unlisted)).unwrap();
    let unclaimed = request("0100", &demo_pan(704), "000000", 100);
    assert_eq!(code(&anonymous.call(&unclaimed).unwrap()), "58");
    let mut open = request("0100", &demo_pan(705), "000000", 100);
    open.set(32, b"777777".to_vec());
    assert_eq!(code(&anonymous.call(&open).unwrap()), "00");

    // No client certificate, or one from another CA: the handshake or the first read fails.
    for (name, client) in [("no certificate", None), ("another CA", Some(&forged))] {
        let refused = TlsLink::connect(&switch, &ca, client)
            .and_then(|mut link| link.call(&request("0100", &demo_pan(706), "000000", 100)));
        assert!(refused.is_err(), "{name}: {:?}", refused.map(|m| code(&m)));
    }
    // A certificate of the CA without a common name: refused, whatever acquirer it names.
    let refused =
        TlsLink::connect(&switch, &ca, Some(&nameless)).and_then(|mut link| link.call(&open));
    assert!(
        refused.is_err(),
        "no common name: {:?}",
        refused.map(|m| code(&m))
    );
    switch.wait_for_output("client certificate refused");
    // A peer that opens a connection and never says hello is closed after the handshake
    // timeout (1 s here).
    let mut silent = TcpStream::connect(switch.addr).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    assert!(matches!(silent.read(&mut byte), Ok(0) | Err(_)));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    switch.wait_for_output("no TLS handshake in time");
    // Plain TCP on the TLS listener: no answer, the connection closed.
    let mut plain = Link::connect(switch.addr, DialectName::Default, FrameHeader::Binary2);
    plain.send(&request("0100", &demo_pan(707), "000000", 100));
    assert!(
        plain.try_receive().is_none(),
        "a plain-TCP client got an answer"
    );
    let output = switch.wait_for_output("TLS handshake failed");
    assert!(output.contains("TLS handshake failed"), "{output}");
    assert!(
        switch
            .output()
            .iter()
            .any(|l| l.contains("acquirer connected") && l.contains("acquirer-123456")),
        "the connection's certificate is in its log line"
    );
}

#[test]
fn unreadable_or_mismatched_tls_files_stop_the_start_with_the_key_and_file() {
    let ca = authority("switch test CA");
    let (certificate, key) = issue(&ca, "switch", true);
    let (_, other_key) = issue(&ca, "switch", true);
    let certificate = write("start.pem", &certificate);
    let key = write("start.key", &key);
    let other_key = write("other.key", &other_key);
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-file.pem");
    let not_pem = write("not.pem", "hello");
    let cases = [
        (
            format!("[tls]\ncert = {missing:?}\nkey = {key:?}\n"),
            format!("tls.cert: {}: cannot read", missing.display()),
        ),
        (
            format!("[tls]\ncert = {not_pem:?}\nkey = {key:?}\n"),
            format!("tls.cert: {}: no certificate in it", not_pem.display()),
        ),
        (
            format!("[tls]\ncert = {certificate:?}\nkey = {not_pem:?}\n"),
            format!("tls.key: {}: no usable private key", not_pem.display()),
        ),
        (
            format!("[tls]\ncert = {certificate:?}\nkey = {other_key:?}\n"),
            format!(
                "tls.key: {}: not usable with the certificate",
                other_key.display()
            ),
        ),
        (
            format!("[tls]\ncert = {certificate:?}\nkey = {key:?}\nclient_ca = {not_pem:?}\n"),
            format!("tls.client_ca: {}: no certificate in it", not_pem.display()),
        ),
        (
            "[[acquirers]]\nid = \"123456\"\nname = \"x\"\nclient_cert_cn = \"a\"\n".to_owned(),
            "acquirers[0].client_cert_cn: needs mutual TLS".to_owned(),
        ),
        (
            format!("[[issuers]]\nname = \"sim\"\ntls = {{ ca = {missing:?} }}\n"),
            format!("issuers[0].tls.ca: {}: cannot read", missing.display()),
        ),
        (
            format!(
                "[[issuers]]\nname = \"sim\"\ntls = {{ ca = {certificate:?}, cert = {certificate:?} }}\n"
            ),
            "issuers[0].tls.cert: cert and key go together".to_owned(),
        ),
    ];
    for (text, expected) in cases {
        let config = config_file("tls-bad", &format!("{text}\n[demo]\naccounts = 10\n"));
        let (code, _, stderr) = run_switch(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--wal-dir",
            fresh_wal_dir().to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{text}\n{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(&expected),
            "{text}\n  want: {expected}\n  got: {last}"
        );
    }
}

/// The issuer simulator behind a TLS-terminating proxy that requires a client certificate of
/// `ca`: (its address, the simulator, the runtime running both).
fn tls_issuer(
    ca: &Authority,
) -> (
    std::net::SocketAddr,
    loadtest::sim::Sim,
    tokio::runtime::Runtime,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cert, key) = issue(ca, "issuer", true);
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.certificate.pem().as_bytes()).unwrap())
            .unwrap();
        Arc::new(roots)
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (sim, serve) = runtime
        .block_on(loadtest::sim::bind(
            "127.0.0.1:0".parse().unwrap(),
            DialectName::Default,
            FrameHeader::Binary2,
            loadtest::sim::Behaviour::default(),
            3,
        ))
        .unwrap();
    runtime.spawn(serve);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let target = sim.addr;
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, sim, runtime)
}

#[test]
fn issuer_links_speak_mutual_tls_and_refuse_an_issuer_of_another_ca() {
    let ca = authority("issuer network CA");
    let (addr, sim, runtime) = tls_issuer(&ca);
    let (client_cert, client_key) = issue(&ca, "switch", false);
    let ca_file = write("issuer-ca.pem", &ca.certificate.pem());
    let cert_file = write("issuer-client.pem", &client_cert);
    let key_file = write("issuer-client.key", &client_key);
    let issuer_tls = |ca: &PathBuf| {
        format!(
            "address = \"{addr}\"\ntls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
            ca.display(),
            cert_file.display(),
            key_file.display()
        )
    };
    let good = issuer_tls(&ca_file);
    let config = config_file(
        "issuer-tls",
        &default_config_with(&[("address = \"127.0.0.1:9584\"", good.as_str())]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    switch.wait_for_output("issuer link signed on");
    let mut link = switch.connect();
    let answer = link.call(&request("0100", b"4111111111111111", "000000", 1_000));
    assert_eq!(code(&answer), "00");
    assert_eq!(sim.counts.json()["authorizations"], 1);
    drop(link);
    drop(switch);

    // An issuer whose certificate does not chain to the configured CA is never signed on to.
    let other = authority("someone else");
    let other_file = write("issuer-other-ca.pem", &other.certificate.pem());
    let bad = issuer_tls(&other_file);
    let config = config_file(
        "issuer-tls-bad",
        &default_config_with(&[("address = \"127.0.0.1:9584\"", bad.as_str())]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let mut link = switch.connect();
    let answer = link.call(&request("0100", b"4111111111111111", "000000", 1_000));
    assert_eq!(code(&answer), "91");
    assert_eq!(sim.counts.json()["authorizations"], 1);
    assert!(
        !switch
            .output()
            .iter()
            .any(|l| l.contains("issuer link signed on"))
    );
    drop(link);
    drop(switch);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}
