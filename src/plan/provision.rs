//! `[provision]` planned: the prompt, skills and extra files resolved inside the recipe's
//! folder, the guest paths they go to checked, the workspace's upstream named.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::{GitGatePlan, ProvisionPlan, Resolver, WORKSPACE_DIR};
use crate::recipe::{self, RecipeError};

impl Resolver<'_> {
    pub(super) fn provision(
        &self,
        p: &recipe::Provision,
        git_gate: &GitGatePlan,
    ) -> Result<ProvisionPlan, RecipeError> {
        let workspace = match &p.workspace {
            None => None,
            Some(w) => {
                let name = w.get_ref();
                if !git_gate.upstreams.iter().any(|u| &u.name == name) {
                    let known: Vec<&str> =
                        git_gate.upstreams.iter().map(|u| u.name.as_str()).collect();
                    return Err(self.recipe.error_at(
                        w.span(),
                        format!(
                            "workspace {name:?} is not a [[git-gate.upstreams]] name (there are: {known:?}); name the upstream to clone into ~/{WORKSPACE_DIR}"
                        ),
                    ));
                }
                Some(name.clone())
            }
        };
        let mut files = BTreeMap::new();
        if let Some(given) = &p.files {
            for (guest, source) in given.get_ref() {
                if !is_home_relative(guest) {
                    return Err(self.recipe.error_at(
                        given.span(),
                        format!(
                            "[provision] files: {guest:?} must be a path under the guest's home, relative and without `..` (e.g. \".claude.json\")"
                        ),
                    ));
                }
                let spanned = toml::Spanned::new(given.span(), source.clone());
                files.insert(guest.clone(), self.file(&spanned)?);
            }
        }
        Ok(ProvisionPlan {
            prompt: p.prompt.as_ref().map(|s| self.file(s)).transpose()?,
            skills: p.skills.as_ref().map(|s| self.dir(s)).transpose()?,
            git_name: p.git_name.as_ref().map(|s| s.get_ref().clone()),
            git_email: p.git_email.as_ref().map(|s| s.get_ref().clone()),
            workspace,
            files,
        })
    }
}

/// A non-empty relative path of plain names: stays under the home it is joined to.
fn is_home_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn home_relative_paths_stay_under_home() {
        for ok in [".claude.json", ".claude/settings.json", "a/b"] {
            assert!(super::is_home_relative(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x"] {
            assert!(!super::is_home_relative(bad), "{bad}");
        }
    }
}
