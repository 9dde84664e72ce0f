//! Twins: a recipe that is another recipe of its folder under another name and backend, so
//! that the two stay in step by construction (the shipped `claude-docker.toml` is
//! `claude.toml` in a docker guest). A twin holds exactly:
//!
//! ```toml
//! extends = "claude.toml"   # the base: a recipe file beside this one, itself no twin
//! name = "claude-docker"
//! [guest]
//! backend = "docker"        # optional; a docker twin drops the base's smolvm-only `start`
//! ```
//!
//! Errors in the twin point into the twin; everything else is the base's, and its errors
//! point into the base.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Backend, Recipe, RecipeError, error_at, is_slug, located, read_text};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Twin {
    extends: Spanned<String>,
    name: Spanned<String>,
    #[serde(default)]
    guest: TwinGuest,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TwinGuest {
    backend: Option<Backend>,
}

impl Twin {
    /// The twin `source` is, or `None` when it is a recipe of its own (no `extends` key).
    pub(super) fn parse(path: &Path, source: &str) -> Result<Option<Twin>, RecipeError> {
        // A file that is not TOML at all gets its error from the recipe parser.
        let Ok(table) = source.parse::<toml::Table>() else {
            return Ok(None);
        };
        if !table.contains_key("extends") {
            return Ok(None);
        }
        toml::from_str::<Twin>(source)
            .map(Some)
            .map_err(|e| located(path, source, &e))
    }

    /// The base recipe with this twin's name and backend.
    pub(super) fn apply(self, path: &Path, source: &str) -> Result<Recipe, RecipeError> {
        let at =
            |span: std::ops::Range<usize>, message: String| error_at(path, source, span, message);
        let base_name = self.extends.get_ref();
        if base_name.is_empty() || base_name.contains('/') || base_name == "." || base_name == ".."
        {
            return Err(at(
                self.extends.span(),
                format!(
                    "extends {base_name:?} must name a recipe file beside this one (e.g. \"claude.toml\")"
                ),
            ));
        }
        let name = self.name.get_ref();
        if !is_slug(name) {
            return Err(at(
                self.name.span(),
                format!(
                    "name {name:?} must be lowercase letters, digits and '-', starting with a letter or digit, at most 40 characters"
                ),
            ));
        }
        let base_path = path.with_file_name(base_name);
        let base_source = read_text(&base_path).map_err(|e| match e {
            RecipeError::Read { .. } => at(
                self.extends.span(),
                format!(
                    "cannot read the base recipe {}; check the name",
                    base_path.display()
                ),
            ),
            other => other,
        })?;
        if Twin::parse(&base_path, &base_source)?.is_some() {
            return Err(at(
                self.extends.span(),
                format!(
                    "the base recipe {base_name} is a twin itself; extend the recipe it extends"
                ),
            ));
        }
        let mut recipe = Recipe::parse(&base_path, base_source)?;
        let doc = &mut recipe.doc;
        doc.name = Spanned::new(doc.name.span(), name.clone());
        if let Some(backend) = self.guest.backend {
            doc.guest.backend = backend;
            if backend == Backend::Docker {
                doc.guest.start = None;
            }
        }
        Ok(recipe)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Recipe;

    const BASE: &str = r#"name = "base"
[guest]
backend = "smolvm"
start = "image"
image = { archive = "img.tar" }
command = ["sh"]
"#;

    fn load(twin: &str) -> Result<Recipe, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), BASE).unwrap();
        let p = dir.path().join("twin.toml");
        std::fs::write(&p, twin).unwrap();
        Recipe::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn a_twin_is_its_base_with_its_name_and_backend() {
        let r = load("extends = \"base.toml\"\nname = \"twin\"\n[guest]\nbackend = \"docker\"\n")
            .unwrap();
        assert_eq!(r.doc.name.get_ref(), "twin");
        assert_eq!(r.doc.guest.backend, super::Backend::Docker);
        assert!(r.doc.guest.start.is_none(), "start is smolvm's only");
        assert_eq!(r.doc.guest.command.get_ref(), &["sh".to_string()]);
        assert!(r.path.ends_with("base.toml"), "errors point into the base");
    }

    #[test]
    fn twin_errors_point_into_the_twin() {
        let e = load("extends = \"base.toml\"\nname = \"twin\"\ncolour = 1\n").unwrap_err();
        assert!(e.contains("twin.toml:3:1: unknown field `colour`"), "{e}");
        let e = load("extends = \"../base.toml\"\nname = \"twin\"\n").unwrap_err();
        assert!(
            e.contains("twin.toml:1:11:") && e.contains("beside this one"),
            "{e}"
        );
        let e = load("extends = \"nope.toml\"\nname = \"twin\"\n").unwrap_err();
        assert!(
            e.contains("twin.toml:1:11:") && e.contains("cannot read the base"),
            "{e}"
        );
        let e = load("extends = \"base.toml\"\nname = \"Twin\"\n").unwrap_err();
        assert!(e.contains("twin.toml:2:8:"), "{e}");
        let e = load("extends = \"twin.toml\"\nname = \"twin\"\n").unwrap_err();
        assert!(e.contains("is a twin itself"), "{e}");
    }
}
