//! `rcrun inspect IMAGE`: what the archive holds, as text or JSON (see [`crate::inspect`]).

use crate::cli;
use crate::image::{self, Archive, ImageRef};
use crate::{inspect, print_warnings, printable, Ctx};
use anyhow::Result;

pub fn cmd_inspect(ctx: &Ctx, a: &cli::InspectArgs) -> Result<i32> {
    let store = ctx.open_store()?;
    let archive = Archive::open(&a.image.image, &store.tmp_dir())?;
    let (count, images) = image::image_positions(&archive)?;
    // Without --ref, every image of the archive, as `docker image ls` lists a loaded save.
    let wanted: Vec<Option<ImageRef>> = match a.image.reference.as_deref() {
        Some(r) => vec![Some(ImageRef::parse(r))],
        None if count > 1 => images
            .into_iter()
            .map(|i| Some(ImageRef::Index(i)))
            .collect(),
        None => vec![None],
    };
    let mut reports = Vec::new();
    let platform = a.image.platform()?;
    for w in &wanted {
        let image = image::select_for(&archive, w.as_ref(), &platform)?;
        print_warnings(&image);
        reports.push(inspect::build(&archive, &image, count, a.layers)?);
    }
    if a.json {
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        println!("{json}");
    } else {
        // Tags, env and history come from the archive: no control character reaches the
        // terminal (each line escaped on its own, so the layout stays).
        let texts: Vec<String> = reports.iter().map(inspect::print_text).collect();
        for line in texts.join("\n").lines() {
            println!("{}", printable(line));
        }
    }
    Ok(0)
}
