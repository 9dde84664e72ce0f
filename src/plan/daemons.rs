//! The bundle's policies in a plan: egress routes, DLP rules, the upstream proxy, the
//! bundle's static names, git-gate's upstreams — each checked and normalized as the rest of
//! the plan is.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{
    DEFAULT_MAX_PUSH_BYTES, DlpRulePlan, HostTarget, NetworkPlan, Resolver, RoutePlan,
    UpstreamPlan, UpstreamSource, is_slug,
};
use crate::daemons::netclass::{Cidr, CidrError};
use crate::recipe::{self, RecipeError};

impl Resolver<'_> {
    /// The egress routes: exact hosts, one route per host, sorted by host.
    pub(super) fn routes(
        &self,
        given: &[Spanned<recipe::Route>],
    ) -> Result<Vec<RoutePlan>, RecipeError> {
        let (recipe, r) = (self.recipe, self);
        let mut routes = Vec::new();
        for route in given {
            let rt = route.get_ref();
            let host = r.host(&rt.host)?;
            if host.starts_with("*.") {
                return Err(recipe.error_at(
                    rt.host.span(),
                    "an egress route needs an exact host, not a wildcard",
                ));
            }
            r.env_name(&rt.token_env, "token_env")?;
            let header = rt.header.get_ref().trim().to_string();
            if header.is_empty()
                || !header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(recipe.error_at(
                    rt.header.span(),
                    "header must be an HTTP header name such as \"Authorization\" or \"x-api-key\"",
                ));
            }
            if routes.iter().any(|x: &RoutePlan| x.host == host) {
                return Err(recipe.error_at(
                    route.span(),
                    format!("two egress routes for host {host:?}; keep one"),
                ));
            }
            routes.push(RoutePlan {
                host,
                token_env: rt.token_env.get_ref().clone(),
                header,
                scheme: rt.scheme.get_ref().trim().to_string(),
                upstream_ca: rt.upstream_ca.as_ref().map(|p| r.file(p)).transpose()?,
            });
        }
        routes.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(routes)
    }

    /// `[pipelock] allow_private`: CIDRs (a bare address is its own range), masked, sorted,
    /// deduplicated.
    pub(super) fn allow_private(
        &self,
        given: &[Spanned<String>],
    ) -> Result<Vec<String>, RecipeError> {
        let mut ranges = Vec::new();
        for text in given {
            let cidr: Cidr = text.get_ref().parse().map_err(|e: CidrError| {
                self.recipe
                    .error_at(text.span(), format!("[pipelock] allow_private: {e}"))
            })?;
            ranges.push(cidr.to_string());
        }
        ranges.sort();
        ranges.dedup();
        Ok(ranges)
    }

    /// The recipe's DLP rules: ids unique, regexes that compile, sorted by id.
    pub(super) fn dlp_rules(
        &self,
        given: &[Spanned<recipe::DlpRule>],
    ) -> Result<Vec<DlpRulePlan>, RecipeError> {
        let mut rules: Vec<DlpRulePlan> = Vec::new();
        for rule in given {
            let r = rule.get_ref();
            let id = r.id.get_ref().trim();
            if !is_slug(id) {
                return Err(self.recipe.error_at(
                    r.id.span(),
                    "a DLP rule id must be lowercase letters, digits and '-' (it names the rule in refusals and logs)",
                ));
            }
            if rules.iter().any(|x| x.id == id) {
                return Err(self.recipe.error_at(
                    r.id.span(),
                    format!("two DLP rules named {id:?}; ids must be unique"),
                ));
            }
            if let Err(e) = regex::bytes::Regex::new(r.regex.get_ref()) {
                return Err(self.recipe.error_at(
                    r.regex.span(),
                    format!("not a valid regular expression: {e}"),
                ));
            }
            rules.push(DlpRulePlan {
                id: id.to_string(),
                regex: r.regex.get_ref().clone(),
            });
        }
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rules)
    }

    /// `http://host:port`, checked.
    pub(super) fn upstream_proxy(
        &self,
        given: Option<&Spanned<String>>,
    ) -> Result<Option<String>, RecipeError> {
        let Some(p) = given else { return Ok(None) };
        let text = p.get_ref().trim();
        let ok = text
            .strip_prefix("http://")
            .and_then(|rest| rest.trim_end_matches('/').rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(self.recipe.error_at(
                p.span(),
                "upstream_proxy must be http://HOST:PORT, e.g. \"http://proxy.corp.example:3128\"",
            ));
        }
        Ok(Some(text.trim_end_matches('/').to_string()))
    }

    /// `[network] hosts`: host names mapped to an IPv4 address or `host-gateway`.
    pub(super) fn network(&self, n: &recipe::Network) -> Result<NetworkPlan, RecipeError> {
        let mut hosts = BTreeMap::new();
        for (name, target) in n.hosts.get_ref() {
            let name_ok = Spanned::new(n.hosts.span(), name.clone());
            let host = self.host(&name_ok)?;
            if host.starts_with("*.") {
                return Err(self.recipe.error_at(
                    n.hosts.span(),
                    format!("[network] hosts needs exact names, not {name:?}"),
                ));
            }
            let target = HostTarget::try_from(target.clone()).map_err(|e| {
                self.recipe
                    .error_at(n.hosts.span(), format!("[network] hosts {name:?}: {e}"))
            })?;
            hosts.insert(host, target);
        }
        Ok(NetworkPlan { hosts })
    }

    /// The git-gate upstreams: unique slug names, sorted by name.
    pub(super) fn upstreams(
        &self,
        given: &[Spanned<recipe::Upstream>],
    ) -> Result<Vec<UpstreamPlan>, RecipeError> {
        let recipe = self.recipe;
        let mut upstreams = Vec::new();
        for up in given {
            let u = up.get_ref();
            if !is_slug(u.name.get_ref()) {
                return Err(recipe.error_at(
                    u.name.span(),
                    "upstream name must be lowercase letters, digits and '-'",
                ));
            }
            if upstreams
                .iter()
                .any(|x: &UpstreamPlan| &x.name == u.name.get_ref())
            {
                return Err(recipe.error_at(
                    u.name.span(),
                    "two git-gate upstreams with this name; names must be unique",
                ));
            }
            let source = self.upstream_source(up)?;
            let mut branches = match &u.branches {
                Some(b) => {
                    if b.get_ref().is_empty()
                        || b.get_ref()
                            .iter()
                            .any(|p| p.trim().is_empty() || p.starts_with('/') || p.contains(".."))
                    {
                        return Err(recipe.error_at(
                            b.span(),
                            "branches must list branch name patterns such as \"agent/*\" (no empty entry, no leading / or ..)",
                        ));
                    }
                    b.get_ref().iter().map(|p| p.trim().to_string()).collect()
                }
                None => vec!["**".to_string()],
            };
            branches.sort();
            branches.dedup();
            let max_push_bytes = match &u.max_push_bytes {
                Some(m) if *m.get_ref() == 0 => {
                    return Err(recipe.error_at(m.span(), "max_push_bytes must be more than 0"));
                }
                Some(m) => *m.get_ref(),
                None => DEFAULT_MAX_PUSH_BYTES,
            };
            upstreams.push(UpstreamPlan {
                name: u.name.get_ref().clone(),
                source,
                branches,
                tags: u.tags,
                max_push_bytes,
            });
        }
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(upstreams)
    }

    /// An upstream's `url` (with its `identity` and `known_hosts`) or its `path`: exactly one.
    fn upstream_source(
        &self,
        up: &Spanned<recipe::Upstream>,
    ) -> Result<UpstreamSource, RecipeError> {
        let (recipe, u) = (self.recipe, up.get_ref());
        let name = u.name.get_ref();
        match (&u.url, &u.path) {
            (Some(url), None) => {
                if url.get_ref().trim().is_empty() {
                    return Err(recipe.error_at(url.span(), "url must not be empty"));
                }
                let identity = u.identity.as_ref().ok_or_else(|| {
                    recipe.error_at(
                        up.span(),
                        format!(
                            "upstream {name:?} has a url and no identity; add identity = \"~/.ssh/KEY\" (the host path of its SSH deploy key)"
                        ),
                    )
                })?;
                if identity.get_ref().trim().is_empty() {
                    return Err(recipe.error_at(
                        identity.span(),
                        "identity must be the host path of an SSH key",
                    ));
                }
                Ok(UpstreamSource::Ssh {
                    url: url.get_ref().trim().to_string(),
                    identity: identity.get_ref().trim().to_string(),
                    known_hosts: u
                        .known_hosts
                        .as_ref()
                        .map(|k| k.get_ref().trim().to_string())
                        .unwrap_or_else(|| "~/.ssh/known_hosts".to_string()),
                })
            }
            (None, Some(path)) => {
                let p = path.get_ref().trim();
                if !(p.starts_with('/') || p.starts_with("~/")) {
                    return Err(recipe.error_at(
                        path.span(),
                        "path must be the host path of a git repository, absolute or under ~/, such as \"~/src/project\"",
                    ));
                }
                for (key, given) in [("identity", &u.identity), ("known_hosts", &u.known_hosts)] {
                    if let Some(g) = given {
                        return Err(recipe.error_at(
                            g.span(),
                            format!(
                                "upstream {name:?} is a repository on the host (path): it takes no {key}; remove it"
                            ),
                        ));
                    }
                }
                Ok(UpstreamSource::Local {
                    path: p.to_string(),
                })
            }
            (Some(url), Some(_)) => Err(recipe.error_at(
                url.span(),
                format!(
                    "upstream {name:?} has both url and path; keep one: url for an SSH remote, path for a repository on this machine"
                ),
            )),
            (None, None) => Err(recipe.error_at(
                up.span(),
                format!(
                    "upstream {name:?} has neither url nor path; add url = \"git@host:repo.git\" (with identity) or path = \"~/src/project\""
                ),
            )),
        }
    }
}

/// An [`UpstreamPlan`] as a component key holds it, every field by name, so that a key read
/// back (`bottle verify`, a run) refuses a field it does not know, naming it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamFields {
    name: String,
    url: Option<String>,
    identity: Option<String>,
    known_hosts: Option<String>,
    path: Option<String>,
    branches: Vec<String>,
    tags: bool,
    max_push_bytes: u64,
}

impl TryFrom<UpstreamFields> for UpstreamPlan {
    type Error = String;
    fn try_from(f: UpstreamFields) -> Result<UpstreamPlan, String> {
        let source = match (f.url, f.identity, f.known_hosts, f.path) {
            (Some(url), Some(identity), Some(known_hosts), None) => UpstreamSource::Ssh {
                url,
                identity,
                known_hosts,
            },
            (None, None, None, Some(path)) => UpstreamSource::Local { path },
            _ => {
                return Err(format!(
                    "upstream {:?} must have either url, identity and known_hosts, or path",
                    f.name
                ));
            }
        };
        Ok(UpstreamPlan {
            name: f.name,
            source,
            branches: f.branches,
            tags: f.tags,
            max_push_bytes: f.max_push_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SSH upstream serializes as it did before `path` existed: built entries keep their hash.
    #[test]
    fn an_ssh_upstream_keeps_its_encoding_and_a_local_one_names_its_path() {
        let mut up = UpstreamPlan {
            name: "o".into(),
            source: UpstreamSource::Ssh {
                url: "u".into(),
                identity: "i".into(),
                known_hosts: "k".into(),
            },
            branches: vec!["b".into()],
            tags: false,
            max_push_bytes: 1,
        };
        let text = serde_json::to_string(&up).unwrap();
        assert_eq!(
            text,
            r#"{"name":"o","url":"u","identity":"i","known_hosts":"k","branches":["b"],"tags":false,"max_push_bytes":1}"#
        );
        assert_eq!(serde_json::from_str::<UpstreamPlan>(&text).unwrap(), up);
        up.source = UpstreamSource::Local {
            path: "~/src/p".into(),
        };
        let text = serde_json::to_string(&up).unwrap();
        assert_eq!(
            text,
            r#"{"name":"o","path":"~/src/p","branches":["b"],"tags":false,"max_push_bytes":1}"#
        );
        assert_eq!(serde_json::from_str::<UpstreamPlan>(&text).unwrap(), up);
        // Read back, a field it does not know is refused by name, and so are two sources.
        let extra = text.replace(r#""tags""#, r#""extra":1,"tags""#);
        let e = serde_json::from_str::<UpstreamPlan>(&extra).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let both = text.replace(r#""path""#, r#""url":"u","path""#);
        let e = serde_json::from_str::<UpstreamPlan>(&both).unwrap_err();
        assert!(e.to_string().contains("either url"), "{e}");
    }
}
