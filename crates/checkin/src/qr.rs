//! QR rendering of credential texts and enrolment codes, as SVG and PNG.
//!
//! The text is `EN1:` + base45, which `qrcode` encodes in alphanumeric mode
//! (about 5.5 bits per character rather than 8).

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module in the PNG, and modules of quiet zone around the code.
const SCALE: usize = 8;
const QUIET: usize = 4;

fn code(text: &str) -> Result<QrCode, String> {
    // Medium error correction: a phone screen or a printed page is clean;
    // a higher level would make dense codes harder to scan, not easier.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| e.to_string())
}

/// The QR code of `text` as an SVG document.
pub fn svg(text: &str) -> Result<String, String> {
    let c = code(text)?;
    Ok(c.render::<qrcode::render::svg::Color<'_>>().min_dimensions(256, 256).quiet_zone(true).build())
}

/// The QR code of `text` as a greyscale PNG.
pub fn png(text: &str) -> Result<Vec<u8>, String> {
    let c = code(text)?;
    let modules = c.width();
    let colors = c.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == Color::Dark {
                for dy in 0..SCALE {
                    let row = (y + QUIET) * SCALE + dy;
                    let start = row * side + (x + QUIET) * SCALE;
                    pixels[start..start + SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let side32 = u32::try_from(side).map_err(|e| e.to_string())?;
        let mut enc = png::Encoder::new(&mut out, side32, side32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&pixels).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_both_formats() {
        let s = super::svg("EN1:ABC123").unwrap_or_default();
        assert!(s.contains("<svg"));
        let p = super::png("EN1:ABC123").unwrap_or_default();
        assert_eq!(&p[1..4], b"PNG");
    }
}
