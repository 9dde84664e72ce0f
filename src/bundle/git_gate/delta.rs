//! git's delta encoding (`gitformat-pack(5)`, "Deltified representation"): a base's size, the
//! result's size, then copy (from the base) and insert (literal) instructions. This module owns
//! applying one, checking every size and range it names, and the result's declared size
//! against what is left of the pack's budget before allocating it.

/// Applies a git delta (`gitformat-pack(5)`, "Deltified representation") to `base`. A result
/// declared larger than `budget` bytes is refused before anything is allocated for it.
pub fn apply_delta(base: &[u8], delta: &[u8], budget: u64) -> Result<Vec<u8>, String> {
    let mut pos = 0;
    let varint = |pos: &mut usize| -> Result<u64, String> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *delta.get(*pos).ok_or("its delta header is truncated")?;
            *pos += 1;
            if shift > 57 {
                return Err("a delta size does not fit 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    };
    let src = varint(&mut pos)?;
    let dst = varint(&mut pos)?;
    if src != base.len() as u64 {
        return Err(format!(
            "its delta expects a base of {src} bytes, the base has {}",
            base.len()
        ));
    }
    if dst > budget {
        return Err(format!(
            "a delta declares a result of {dst} bytes, more than the {budget} bytes left of the pack's inflate budget"
        ));
    }
    let mut out = Vec::with_capacity(usize::try_from(dst).map_err(|_| "a delta's size overflows")?);
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut field = |bits: u8, bytes: usize| -> Result<usize, String> {
                let mut v = 0usize;
                for i in 0..bytes {
                    if op & (bits << i) != 0 {
                        let b = *delta.get(pos).ok_or("a delta copy is truncated")?;
                        pos += 1;
                        v |= usize::from(b) << (8 * i);
                    }
                }
                Ok(v)
            };
            let off = field(0x01, 4)?;
            let mut len = field(0x10, 3)?;
            if len == 0 {
                len = 0x10000;
            }
            let piece = off
                .checked_add(len)
                .and_then(|end| base.get(off..end))
                .ok_or("a delta copies from outside its base")?;
            out.extend_from_slice(piece);
        } else if op != 0 {
            let piece = delta
                .get(pos..pos + usize::from(op))
                .ok_or("a delta insert is truncated")?;
            out.extend_from_slice(piece);
            pos += usize::from(op);
        } else {
            return Err("a delta holds the reserved instruction 0".into());
        }
        if out.len() as u64 > dst {
            return Err("a delta writes past its declared size".into());
        }
    }
    if out.len() as u64 != dst {
        return Err(format!(
            "a delta gives {} bytes, not its declared {dst}",
            out.len()
        ));
    }
    Ok(out)
}
