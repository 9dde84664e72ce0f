//! `normalize SRC DEST [NAME:TAG]`: rewrites a `docker save` archive with
//! `bottle::oci::normalize` and prints the image id. Used by benches/normalize_memory.sh.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dest, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: normalize SRC DEST [NAME:TAG]");
    };
    let info = bottle::oci::normalize(
        src.as_ref(),
        dest.as_ref(),
        rest.first().map(String::as_str),
    )?;
    println!("{} ({} layers)", info.id, info.layers);
    Ok(())
}
