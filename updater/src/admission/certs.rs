//! Self-managed webhook certificates: tailor makes its own CA and serving certificate, keeps
//! them in one Secret that every replica serves from, keeps the webhook configurations'
//! `caBundle` current, and rotates both before they expire.
//!
//! - **The Secret** (`--webhook-secret`, in the updater's namespace) holds `tls.crt`/`tls.key`
//!   (the serving certificate), `ca.crt` (the bundle the API server must trust: the signing CA
//!   and, while a CA rotation is under way, the next one), the signing CA's certificate and key,
//!   and its state in annotations (Unix seconds). Any replica may create or renew it: writes
//!   carry the resourceVersion they read, so of two replicas renewing at once one wins and the
//!   other reads the winner's.
//! - **The serving certificate** lives `--webhook-cert-validity` and is renewed, signed by the
//!   same CA, once less than a third of it is left (or when its names change).
//! - **The CA** lives ten times as long. Once less than a third of it is left, a next CA is
//!   staged: added to `ca.crt` and so to every `caBundle`, while the old one still signs. Only
//!   after the bundle has been in place for a while (two check intervals, at least 30 s, so the
//!   API server has seen it) does the next CA sign a new serving certificate and the old one
//!   leave the bundle. The API server trusts the serving certificate at every moment.
//! - **Every check interval** each replica re-reads the Secret, does what is due, makes sure
//!   every webhook in the named Mutating- and ValidatingWebhookConfigurations carries
//!   `ca.crt` as its `caBundle`, and serves the Secret's certificate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::tls::ServingCert;
use crate::metrics::Metrics;

const CA_NAME: &str = "tailor.dev/ca-name";
const CA_NOT_BEFORE: &str = "tailor.dev/ca-not-before";
const CA_NOT_AFTER: &str = "tailor.dev/ca-not-after";
const NEXT_NAME: &str = "tailor.dev/next-ca-name";
const NEXT_NOT_AFTER: &str = "tailor.dev/next-ca-not-after";
const NEXT_STAGED: &str = "tailor.dev/next-ca-staged";
const CERT_NOT_BEFORE: &str = "tailor.dev/cert-not-before";
const CERT_NOT_AFTER: &str = "tailor.dev/cert-not-after";
const CERT_NAMES: &str = "tailor.dev/cert-names";

/// What the self-managed certificates are given.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Secret's namespace (the updater's) and name.
    pub namespace: String,
    pub secret: String,
    /// Mutating- and ValidatingWebhookConfigurations whose `caBundle` is kept current.
    pub configurations: Vec<String>,
    /// The serving certificate's names (DNS names or IP addresses).
    pub names: Vec<String>,
    /// The serving certificate's lifetime; the CA's is ten times as long.
    pub validity: Duration,
    /// How often the Secret is checked.
    pub check: Duration,
}

/// What is due, from the Secret's state. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// No usable Secret: a new CA and serving certificate.
    Create,
    /// Stage a next CA in the bundle.
    StageCa,
    /// Sign with the staged CA and drop the old one from the bundle.
    PromoteCa,
    /// A new serving certificate from the same CA.
    RenewServing,
    /// Nothing.
    Nothing,
}

/// The annotations of the Secret as numbers (missing or unreadable: `None`).
fn stamp(a: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    a.get(key).and_then(|v| v.parse().ok())
}

/// Less than a third of `[from, to]` left at `now`.
fn late(now: i64, from: i64, to: i64) -> bool {
    to - now < (to - from) / 3
}

/// What is due for a Secret with `annotations` and `keys` present, at `now` (Unix seconds).
pub fn due(
    now: i64,
    annotations: &BTreeMap<String, String>,
    keys: &[&str],
    names: &[String],
    settle: i64,
) -> Due {
    let has = |k: &str| keys.contains(&k);
    let (Some(ca_from), Some(ca_to), Some(cert_from), Some(cert_to)) = (
        stamp(annotations, CA_NOT_BEFORE),
        stamp(annotations, CA_NOT_AFTER),
        stamp(annotations, CERT_NOT_BEFORE),
        stamp(annotations, CERT_NOT_AFTER),
    ) else {
        return Due::Create;
    };
    if ![
        "tls.crt",
        "tls.key",
        "ca.crt",
        "ca-signing.crt",
        "ca-signing.key",
    ]
    .iter()
    .all(|k| has(k))
        || now >= ca_to
        || !annotations.contains_key(CA_NAME)
    {
        return Due::Create;
    }
    let staged = stamp(annotations, NEXT_STAGED);
    let next_ok = has("ca-next.crt") && has("ca-next.key") && annotations.contains_key(NEXT_NAME);
    if let (Some(at), true) = (staged, next_ok) {
        if now - at >= settle || now >= ca_to - settle {
            return Due::PromoteCa;
        }
    } else if late(now, ca_from, ca_to) {
        return Due::StageCa;
    }
    if now >= cert_to
        || late(now, cert_from, cert_to)
        || annotations.get(CERT_NAMES) != Some(&names.join(","))
    {
        return Due::RenewServing;
    }
    Due::Nothing
}

fn err(e: impl std::fmt::Display) -> String {
    format!("webhook certificates: {e}")
}

fn at(unix: i64) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(err)
}

fn ca_params(name: &str, from: i64, to: i64) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = at(from)?;
    p.not_after = at(to)?;
    Ok(p)
}

/// A new CA: (name, certificate PEM, key PEM).
fn new_ca(now: i64, lifetime: i64) -> Result<(String, String, String), String> {
    let name = format!("tailor-webhook-ca-{now}");
    let key = KeyPair::generate().map_err(err)?;
    let cert = ca_params(&name, now - 60, now + lifetime)?
        .self_signed(&key)
        .map_err(err)?;
    Ok((name, cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` signed by the CA `ca_name`/`ca_key`: (cert, key) PEM.
fn new_serving(
    names: &[String],
    ca_name: &str,
    ca_key: &str,
    now: i64,
    lifetime: i64,
) -> Result<(String, String), String> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(err)?;
    // Only the name and the key identify an issuer in what it signs.
    let issuer = Issuer::new(ca_params(ca_name, now, now + 1)?, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut p = CertificateParams::new(names.to_vec()).map_err(err)?;
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("tailor-webhook", String::as_str),
    );
    p.not_before = at(now - 60)?;
    p.not_after = at(now + lifetime)?;
    let cert = p.signed_by(&key, &issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A Secret's annotations and data.
type Annotations = BTreeMap<String, String>;
type Data = BTreeMap<String, ByteString>;

fn text(data: &Data, key: &str) -> String {
    data.get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The Secret after doing what is `due`.
fn renewed(
    s: &Settings,
    due: &Due,
    now: i64,
    mut annotations: BTreeMap<String, String>,
    mut data: BTreeMap<String, ByteString>,
) -> Result<(Annotations, Data), String> {
    let cert_life = i64::try_from(s.validity.as_secs())
        .unwrap_or(i64::MAX / 20)
        .max(3);
    let ca_life = cert_life.saturating_mul(10);
    fn put(d: &mut BTreeMap<String, ByteString>, k: &str, v: String) {
        d.insert(k.to_owned(), ByteString(v.into_bytes()));
    }
    fn note(a: &mut BTreeMap<String, String>, k: &str, v: String) {
        a.insert(k.to_owned(), v);
    }
    match due {
        Due::Create => {
            let (name, cert, key) = new_ca(now, ca_life)?;
            put(&mut data, "ca.crt", cert.clone());
            put(&mut data, "ca-signing.crt", cert);
            put(&mut data, "ca-signing.key", key);
            data.remove("ca-next.crt");
            data.remove("ca-next.key");
            annotations.retain(|k, _| !k.starts_with("tailor.dev/next-ca"));
            note(&mut annotations, CA_NAME, name);
            note(&mut annotations, CA_NOT_BEFORE, (now - 60).to_string());
            note(&mut annotations, CA_NOT_AFTER, (now + ca_life).to_string());
        }
        Due::StageCa => {
            let (name, cert, key) = new_ca(now, ca_life)?;
            let bundle = format!("{}{}", text(&data, "ca-signing.crt"), cert);
            put(&mut data, "ca.crt", bundle);
            put(&mut data, "ca-next.crt", cert);
            put(&mut data, "ca-next.key", key);
            note(&mut annotations, NEXT_NAME, name);
            note(
                &mut annotations,
                NEXT_NOT_AFTER,
                (now + ca_life).to_string(),
            );
            note(&mut annotations, NEXT_STAGED, now.to_string());
            return Ok((annotations, data));
        }
        Due::PromoteCa => {
            let (cert, key) = (text(&data, "ca-next.crt"), text(&data, "ca-next.key"));
            put(&mut data, "ca.crt", cert.clone());
            put(&mut data, "ca-signing.crt", cert);
            put(&mut data, "ca-signing.key", key);
            data.remove("ca-next.crt");
            data.remove("ca-next.key");
            let name = annotations.remove(NEXT_NAME).unwrap_or_default();
            let to = annotations.remove(NEXT_NOT_AFTER).unwrap_or_default();
            let from = annotations.remove(NEXT_STAGED).unwrap_or_default();
            note(&mut annotations, CA_NAME, name);
            note(&mut annotations, CA_NOT_AFTER, to);
            note(&mut annotations, CA_NOT_BEFORE, from);
        }
        Due::RenewServing | Due::Nothing => {}
    }
    let ca_name = annotations.get(CA_NAME).cloned().unwrap_or_default();
    let ca_key = text(&data, "ca-signing.key");
    let (cert, key) = new_serving(&s.names, &ca_name, &ca_key, now, cert_life)?;
    put(&mut data, "tls.crt", cert);
    put(&mut data, "tls.key", key);
    note(&mut annotations, CERT_NOT_BEFORE, (now - 60).to_string());
    note(
        &mut annotations,
        CERT_NOT_AFTER,
        (now + cert_life).to_string(),
    );
    note(&mut annotations, CERT_NAMES, s.names.join(","));
    Ok((annotations, data))
}

/// Reads the Secret, does what is due, and returns it as it now is.
async fn ensure_secret(client: &kube::Client, s: &Settings) -> Result<Secret, String> {
    let api = Api::<Secret>::namespaced(client.clone(), &s.namespace);
    let current = api.get_opt(&s.secret).await.map_err(err)?;
    let now = chrono::Utc::now().timestamp();
    let settle = i64::try_from(s.check.as_secs().saturating_mul(2))
        .unwrap_or(i64::MAX)
        .max(30);
    let (annotations, data) = current.as_ref().map_or_else(Default::default, |c| {
        (
            c.metadata.annotations.clone().unwrap_or_default(),
            c.data.clone().unwrap_or_default(),
        )
    });
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    let due = due(now, &annotations, &keys, &s.names, settle);
    if due == Due::Nothing {
        return current.ok_or_else(|| err("no Secret"));
    }
    tracing::info!(secret = %s.secret, ?due, "webhook certificates: renewing");
    let (annotations, data) = renewed(s, &due, now, annotations, data)?;
    let mut secret = current.clone().unwrap_or_default();
    secret.metadata.name = Some(s.secret.clone());
    secret.metadata.namespace = Some(s.namespace.clone());
    secret.metadata.annotations = Some(annotations);
    secret.metadata.managed_fields = None;
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(data);
    let written = match current {
        None => api.create(&PostParams::default(), &secret).await,
        // Carries the resourceVersion read: a replica that renewed meanwhile wins (409).
        Some(_) => {
            api.replace(&s.secret, &PostParams::default(), &secret)
                .await
        }
    };
    match written {
        Ok(w) => Ok(w),
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(&s.secret).await.map_err(err),
        Err(e) => Err(err(e)),
    }
}

/// Sets `bundle` as the `caBundle` of every webhook in the named configurations (those that
/// exist), where it differs.
async fn ensure_bundles(client: &kube::Client, names: &[String], bundle: &[u8]) {
    macro_rules! each_config {
        ($kind:ty) => {
            let api = Api::<$kind>::all(client.clone());
            for name in names {
                let Ok(Some(mut config)) = api.get_opt(name).await else {
                    continue;
                };
                let mut changed = false;
                for w in config.webhooks.iter_mut().flatten() {
                    if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle) {
                        w.client_config.ca_bundle = Some(ByteString(bundle.to_vec()));
                        changed = true;
                    }
                }
                if changed {
                    config.metadata.managed_fields = None;
                    match api.replace(name, &PostParams::default(), &config).await {
                        Ok(_) => tracing::info!(configuration = %name, "webhook caBundle updated"),
                        Err(e) => tracing::warn!(configuration = %name, error = %e, "cannot update the webhook caBundle"),
                    }
                }
            }
        };
    }
    each_config!(MutatingWebhookConfiguration);
    each_config!(ValidatingWebhookConfiguration);
}

/// One round: the Secret, the bundles, and the certificate served.
async fn round(
    client: &kube::Client,
    s: &Settings,
    cert: &ServingCert,
    metrics: &Metrics,
) -> Result<(), String> {
    let secret = ensure_secret(client, s).await?;
    if let Some(expiry) = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| stamp(a, CERT_NOT_AFTER))
    {
        metrics.admission.certificate_expires(expiry);
    }
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| data.get(k).map(|b| b.0.clone()).unwrap_or_default();
    ensure_bundles(client, &s.configurations, &get("ca.crt")).await;
    if cert.set_pem(&get("tls.crt"), &get("tls.key"))? {
        tracing::info!(secret = %s.secret, "webhook serving certificate loaded");
    }
    Ok(())
}

/// Keeps the certificates current until dropped.
pub async fn run(client: kube::Client, s: Settings, cert: Arc<ServingCert>, metrics: Arc<Metrics>) {
    loop {
        let wait = match round(&client, &s, &cert, &metrics).await {
            Ok(()) => s.check,
            Err(e) => {
                tracing::error!(error = %e, "webhook certificates not current");
                s.check.min(Duration::from_secs(5))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, i64)]) -> BTreeMap<String, String> {
        let mut a: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_string()))
            .collect();
        a.insert(CA_NAME.into(), "ca".into());
        a.insert(CERT_NAMES.into(), "svc".into());
        a
    }

    const KEYS: &[&str] = &[
        "tls.crt",
        "tls.key",
        "ca.crt",
        "ca-signing.crt",
        "ca-signing.key",
    ];

    #[test]
    fn renews_the_serving_certificate_when_a_third_is_left() {
        let names = vec!["svc".to_owned()];
        let a = state(&[
            (CA_NOT_BEFORE, 0),
            (CA_NOT_AFTER, 3000),
            (CERT_NOT_BEFORE, 0),
            (CERT_NOT_AFTER, 300),
        ]);
        assert_eq!(due(100, &a, KEYS, &names, 30), Due::Nothing);
        assert_eq!(due(201, &a, KEYS, &names, 30), Due::RenewServing);
        assert_eq!(due(400, &a, KEYS, &names, 30), Due::RenewServing);
        // New names.
        assert_eq!(due(100, &a, KEYS, &["other".into()], 30), Due::RenewServing);
        // A key missing, or an expired CA: start again.
        assert_eq!(due(100, &a, &KEYS[1..], &names, 30), Due::Create);
        assert_eq!(due(3000, &a, KEYS, &names, 30), Due::Create);
        assert_eq!(due(0, &BTreeMap::new(), KEYS, &names, 30), Due::Create);
    }

    #[test]
    fn a_ca_is_staged_then_promoted_after_the_bundle_settled() {
        let names = vec!["svc".to_owned()];
        let mut a = state(&[
            (CA_NOT_BEFORE, 0),
            (CA_NOT_AFTER, 3000),
            (CERT_NOT_BEFORE, 1900),
            (CERT_NOT_AFTER, 2200),
        ]);
        assert_eq!(due(2001, &a, KEYS, &names, 30), Due::StageCa);
        a.insert(NEXT_STAGED.into(), "2001".into());
        a.insert(NEXT_NAME.into(), "next".into());
        let keys = [KEYS, &["ca-next.crt", "ca-next.key"]].concat();
        assert_eq!(due(2010, &a, &keys, &names, 30), Due::Nothing);
        assert_eq!(due(2031, &a, &keys, &names, 30), Due::PromoteCa);
        // Staged but its keys are gone: stage again.
        assert_eq!(due(2031, &a, KEYS, &names, 30), Due::StageCa);
    }

    #[test]
    fn a_renewed_secret_loads_and_its_ca_rotates_through_a_two_ca_bundle() {
        let s = Settings {
            namespace: "ns".into(),
            secret: "s".into(),
            configurations: vec![],
            names: vec!["svc.ns.svc".into(), "127.0.0.1".into()],
            validity: Duration::from_secs(300),
            check: Duration::from_secs(10),
        };
        let (a, d) = renewed(&s, &Due::Create, 1000, BTreeMap::new(), BTreeMap::new()).unwrap();
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(due(1000, &a, &keys, &s.names, 30), Due::Nothing);
        let cert = ServingCert::default();
        assert!(cert.set_pem(&d["tls.crt"].0, &d["tls.key"].0).unwrap());
        // Stage, then promote: the bundle holds both CAs in between, then the new one only.
        let (a2, d2) = renewed(&s, &Due::StageCa, 2000, a.clone(), d.clone()).unwrap();
        assert_eq!(text(&d2, "ca.crt").matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(d2["tls.crt"], d["tls.crt"]);
        let (a3, d3) = renewed(&s, &Due::PromoteCa, 2100, a2, d2.clone()).unwrap();
        assert_eq!(text(&d3, "ca.crt"), text(&d2, "ca-next.crt"));
        assert_ne!(d3["tls.crt"], d["tls.crt"]);
        assert_ne!(a3[CA_NAME], a[CA_NAME]);
    }
}
