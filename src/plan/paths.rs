//! Paths of a recipe resolved inside its folder: relative, no way out (`..`, absolute paths,
//! links), and the file or folder they name there.

use std::path::{Component, Path};

use toml::Spanned;

use super::resolver::Resolver;
use crate::recipe::RecipeError;

impl Resolver<'_> {
    /// A path relative to the recipe's folder, checked to stay inside it.
    pub(super) fn rel(&self, s: &Spanned<String>) -> Result<String, RecipeError> {
        let raw = s.get_ref();
        let p = Path::new(raw);
        let outside = || {
            self.recipe.error_at(
                s.span(),
                format!(
                    "path {raw:?} leaves the recipe's folder {}; inputs must live beside the recipe so the hash can pin them: move the file under that folder",
                    self.root.display()
                ),
            )
        };
        if p.is_absolute() {
            return Err(outside());
        }
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(outside());
                    }
                }
                _ => return Err(outside()),
            }
        }
        let rel = parts.join("/");
        // A symlink may still lead out of the folder.
        if let Ok(real) = std::fs::canonicalize(self.root.join(&rel))
            && !real.starts_with(self.root)
        {
            return Err(outside());
        }
        Ok(rel)
    }

    pub(super) fn file(&self, s: &Spanned<String>) -> Result<String, RecipeError> {
        let rel = self.rel(s)?;
        let host = self.root.join(&rel);
        if !host.is_file() {
            return Err(self.recipe.error_at(
                s.span(),
                format!(
                    "input file {} does not exist (or is not a file); create it or fix the path",
                    host.display()
                ),
            ));
        }
        Ok(rel)
    }

    pub(super) fn dir(&self, s: &Spanned<String>) -> Result<String, RecipeError> {
        let rel = self.rel(s)?;
        let host = if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(&rel)
        };
        if !host.is_dir() {
            return Err(self.recipe.error_at(
                s.span(),
                format!("input folder {} does not exist (or is not a folder); create it or fix the path", host.display()),
            ));
        }
        Ok(rel)
    }
}

/// The folder part of a relative path (`""` for a bare name).
pub(super) fn parent_rel(rel: &str) -> String {
    match rel.rfind('/') {
        Some(i) => rel[..i].to_string(),
        None => String::new(),
    }
}
