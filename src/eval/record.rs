//! Recording an evaluation: the data file's identity (a file's blake3; for a directory, the
//! blake3 of its sorted `name\tblake3` listing), and the append to `provenance.json`, done as
//! read, append, atomic replace, so a crash leaves the old or the new file, never half of one.
//! The id is never touched: metadata does not change a checkpoint's identity.

use std::path::Path;

use crate::checkpoint::{
    hash_file, replace_file, Evaluation, InputFile, Provenance, PROVENANCE_FILE,
};
use crate::error::{Error, Result};

/// The provenance entry for the evaluated data. Directories (MMLU's `test/`) hash the listing
/// of the files that were read (the `.csv` files), so renaming or editing any of them changes it.
pub fn data_file(role: &str, path: &Path) -> Result<InputFile> {
    let blake3 = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io("read directory", path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "csv"))
            .collect();
        files.sort();
        let mut listing = String::new();
        for f in &files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            listing.push_str(&format!("{name}\t{}\n", hash_file(f)?));
        }
        format!("blake3:{}", blake3::hash(listing.as_bytes()).to_hex())
    } else {
        hash_file(path)?
    };
    Ok(InputFile {
        role: role.to_string(),
        path: path.display().to_string(),
        blake3,
    })
}

/// Appends `eval` to `dir/provenance.json`. The file is read again here, not reused from when
/// the checkpoint was opened, so an evaluation that finished meanwhile is kept; the id must
/// still be the one evaluated.
pub fn append(dir: &Path, eval: Evaluation) -> Result<()> {
    let path = dir.join(PROVENANCE_FILE);
    let mut prov = Provenance::read(&path)?;
    if prov.id != eval.checkpoint {
        return Err(Error::format(
            "provenance",
            &path,
            "id",
            format!(
                "changed to {} while evaluating {}",
                prov.id, eval.checkpoint
            ),
        ));
    }
    prov.push_evaluation(eval);
    replace_file(&path, &prov.to_json_bytes())
}
