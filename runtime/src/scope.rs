//! Which namespaces a controller watches: the whole cluster (the default), only some
//! (`--namespaces a,b`: one watch per namespace, so a Role in each is all the RBAC it needs),
//! or all but some (`--exclude-namespaces x,y`: one cluster-wide watch with the field selector
//! `metadata.namespace!=x,metadata.namespace!=y`). Objects outside the scope are never read, so
//! never planned nor written. Cluster-scoped objects (Nodes) are not affected.

mod merge;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::core::NamespaceScope;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

/// The namespaces a controller watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    #[default]
    Cluster,
    /// Only these (sorted, without duplicates, at least one).
    Only(Vec<String>),
    /// Every namespace but these (sorted, without duplicates, at least one).
    Except(Vec<String>),
}

/// The scope flags, shared by both binaries.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Watch only these namespaces (comma-separated): VerticalAutoscalers, pods and everything
    /// else namespaced elsewhere are never read nor changed. A Role in each is enough RBAC.
    /// Empty: the whole cluster.
    #[arg(
        long,
        env = "TAILOR_NAMESPACES",
        value_delimiter = ',',
        conflicts_with = "exclude_namespaces"
    )]
    pub namespaces: Vec<String>,
    /// Watch every namespace but these (comma-separated). Not with --namespaces.
    #[arg(long, env = "TAILOR_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
}

impl ScopeArgs {
    /// The validated scope.
    pub fn scope(&self) -> Result<Scope, String> {
        Scope::new(&self.namespaces, &self.exclude_namespaces)
    }
}

/// Whether `name` is a DNS-1123 label (what a namespace name must be); why not if it is not.
pub fn check_namespace_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a namespace name: {why}"));
    if name.len() > 63 {
        return bad("longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lower-case letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it must start and end with a letter or digit");
    }
    Ok(())
}

/// The names of a flag's list: trimmed, empty entries left out, each checked, sorted, unique.
fn names(flag: &str, list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in list.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        check_namespace_name(name).map_err(|e| format!("--{flag}: {e}"))?;
        out.push(name.to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl Scope {
    /// The scope of `--namespaces only` and `--exclude-namespaces except`; both empty is the
    /// whole cluster, both given an error.
    pub fn new(only: &[String], except: &[String]) -> Result<Self, String> {
        let (only, except) = (
            names("namespaces", only)?,
            names("exclude-namespaces", except)?,
        );
        match (only.is_empty(), except.is_empty()) {
            (true, true) => Ok(Self::Cluster),
            (false, true) => Ok(Self::Only(only)),
            (true, false) => Ok(Self::Except(except)),
            (false, false) => Err(
                "--namespaces and --exclude-namespaces cannot be used together: give the namespaces to watch, or those to leave out".into(),
            ),
        }
    }

    /// Whether objects in namespace `ns` are watched.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Self::Cluster => true,
            Self::Only(names) => names.iter().any(|n| n == ns),
            Self::Except(names) => !names.iter().any(|n| n == ns),
        }
    }

    /// The field selector of a cluster-wide watch: with `Except`, the namespaces left out.
    pub fn field_selector(&self) -> Option<String> {
        match self {
            Self::Except(names) => Some(
                names
                    .iter()
                    .map(|n| format!("metadata.namespace!={n}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        }
    }

    /// `config` with the scope's field selector added to its own.
    pub fn config(&self, mut config: watcher::Config) -> watcher::Config {
        if let Some(scope) = self.field_selector() {
            config.field_selector = Some(match config.field_selector.take() {
                Some(own) if !own.is_empty() => format!("{own},{scope}"),
                _ => scope,
            });
        }
        config
    }

    /// The APIs to watch `K` through: one per namespace with `Only`, else one for every
    /// namespace.
    pub fn apis_with<K>(&self, client: &kube::Client, dyntype: &K::DynamicType) -> Vec<Api<K>>
    where
        K: kube::Resource,
        K::Scope: NamespaceScope,
    {
        match self {
            Self::Only(names) => names
                .iter()
                .map(|n| Api::all_with(client.clone(), dyntype).constrain(n))
                .collect(),
            _ => vec![Api::all_with(client.clone(), dyntype)],
        }
    }

    /// [`Scope::apis_with`] for a type known at compile time.
    pub fn apis<K>(&self, client: &kube::Client) -> Vec<Api<K>>
    where
        K: kube::Resource,
        K::Scope: NamespaceScope,
        K::DynamicType: Default,
    {
        self.apis_with(client, &K::DynamicType::default())
    }

    /// The watcher events of every `K` in scope, as one stream for one reflector `store`
    /// (give the reader of the writer the stream feeds). With `Only` and several namespaces,
    /// the namespaces' watches are merged: the store is ready once each has listed, and a
    /// namespace that lists again (after a lost watch) changes only its own objects. Each
    /// namespace's watch backs off on its own; its errors are logged, not passed on.
    pub fn watcher<K>(
        &self,
        client: &kube::Client,
        dyntype: &K::DynamicType,
        config: watcher::Config,
        store: Store<K>,
    ) -> BoxStream<'static, watcher::Result<watcher::Event<K>>>
    where
        K: crate::Object,
        K::Scope: NamespaceScope,
    {
        use kube::runtime::WatchStreamExt;
        let config = self.config(config);
        let mut apis = self.apis_with(client, dyntype);
        let Self::Only(names) = self else {
            return watcher(apis.remove(0), config).boxed();
        };
        if apis.len() == 1 {
            return watcher(apis.remove(0), config).boxed();
        }
        let sources = names
            .iter()
            .zip(apis)
            .map(|(ns, api)| {
                let ns_log = ns.clone();
                let events = watcher(api, config.clone())
                    .default_backoff()
                    .inspect_err(move |e| {
                        tracing::warn!(namespace = %ns_log, error = %e, "watch failed; retrying");
                        crate::health::global()
                            .api_failed(&e.to_string(), std::time::Instant::now());
                    })
                    .filter_map(|e| std::future::ready(e.ok()))
                    .boxed();
                (ns.clone(), events)
            })
            .collect();
        merge::merge(sources, store).map(Ok).boxed()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster => f.write_str("every namespace"),
            Self::Only(names) => write!(f, "only namespaces {}", names.join(", ")),
            Self::Except(names) => write!(f, "every namespace but {}", names.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Scope, ScopeArgs};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        scope: ScopeArgs,
    }

    fn parse(args: &[&str]) -> Result<Scope, String> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.scope.scope()
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn flags_give_the_scope() {
        assert_eq!(parse(&[]), Ok(Scope::Cluster));
        assert_eq!(parse(&["--namespaces="]), Ok(Scope::Cluster));
        assert_eq!(
            parse(&["--namespaces=b,a", "--namespaces", "a"]),
            Ok(Scope::Only(list(&["a", "b"])))
        );
        assert_eq!(
            parse(&["--exclude-namespaces", " kube-system , x"]),
            Ok(Scope::Except(list(&["kube-system", "x"])))
        );
    }

    #[test]
    fn both_flags_or_bad_names_are_refused_with_a_reason() {
        let both = parse(&["--namespaces=a", "--exclude-namespaces=b"]).unwrap_err();
        assert!(both.contains("cannot be used with"), "{both}");
        let both = Scope::new(&list(&["a"]), &list(&["b"])).unwrap_err();
        assert!(both.contains("cannot be used together"), "{both}");
        for (bad, why) in [
            ("Shop", "lower-case"),
            ("shop_1", "lower-case"),
            ("-shop", "start and end"),
            ("shop-", "start and end"),
            (&"a".repeat(64), "63"),
        ] {
            let e = parse(&[&format!("--namespaces=ok,{bad}")]).unwrap_err();
            assert!(e.contains("--namespaces") && e.contains(why), "{bad}: {e}");
            let e = parse(&[&format!("--exclude-namespaces={bad}")]).unwrap_err();
            assert!(
                e.contains("--exclude-namespaces") && e.contains(why),
                "{bad}: {e}"
            );
        }
        assert!(parse(&[&format!("--namespaces={}", "a".repeat(63))]).is_ok());
    }

    #[test]
    fn membership_field_selector_and_display() {
        let only = Scope::Only(list(&["a", "b"]));
        let except = Scope::Except(list(&["x", "y"]));
        assert!(Scope::Cluster.contains("x"));
        assert!(only.contains("a") && !only.contains("x"));
        assert!(except.contains("a") && !except.contains("y"));
        assert_eq!(
            except.field_selector().as_deref(),
            Some("metadata.namespace!=x,metadata.namespace!=y")
        );
        assert_eq!(only.field_selector(), None);
        let config = except.config(kube::runtime::watcher::Config::default().fields("a=b"));
        assert_eq!(
            config.field_selector.as_deref(),
            Some("a=b,metadata.namespace!=x,metadata.namespace!=y")
        );
        assert_eq!(only.to_string(), "only namespaces a, b");
        assert_eq!(except.to_string(), "every namespace but x, y");
        assert_eq!(Scope::Cluster.to_string(), "every namespace");
    }
}
