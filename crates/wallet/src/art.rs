//! Generated collectible art: one SVG per event and ticket type, a pure
//! function of the ids and the texts it shows, so every process (and every
//! marketplace cache) gets the same bytes.
//!
//! Safety: every text is XML-escaped and stripped of control characters, the
//! document has no script, no external references and no event handlers, so
//! an organizer's event name cannot inject markup into a wallet's renderer.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// What the card shows.
#[derive(Debug, Clone)]
pub struct ArtText<'a> {
    pub event_name: &'a str,
    /// The ticket type's name; `None` for the collection's own image.
    pub ticket_type: Option<&'a str>,
    /// For example `2030-06-01`.
    pub date: &'a str,
    pub venue: &'a str,
}

/// The SVG for `seed` (an event id, or event id and ticket type id).
pub fn svg(seed: &str, text: &ArtText<'_>) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let hue1 = u16::from_be_bytes([h[0], h[1]]) % 360;
    let hue2 = (hue1 + 40 + u16::from(h[2]) % 140) % 360;
    let hue3 = u16::from_be_bytes([h[3], h[4]]) % 360;
    let angle = u16::from(h[5]) % 180;
    let mut out = String::with_capacity(2048);
    out.push_str(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 1000 1000\" width=\"1000\" height=\"1000\" \
         role=\"img\">",
    );
    let _ = write!(
        out,
        "<defs><linearGradient id=\"g\" gradientTransform=\"rotate({angle} .5 .5)\">\
         <stop offset=\"0\" stop-color=\"hsl({hue1},70%,45%)\"/><stop offset=\"1\" stop-color=\"hsl({hue2},75%,30%)\"/>\
         </linearGradient></defs><rect width=\"1000\" height=\"1000\" fill=\"url(#g)\"/>"
    );
    // A few circles placed by the hash: each ticket type gets its own pattern.
    for i in 0..6 {
        let b = &h[6 + i * 4..10 + i * 4];
        let (cx, cy) = (u32::from(b[0]) * 1000 / 255, u32::from(b[1]) * 1000 / 255);
        let r = 40 + u16::from(b[2]) % 220;
        let opacity = 8 + b[3] % 20;
        let _ = write!(
            out,
            "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"{r}\" fill=\"hsl({hue3},80%,70%)\" fill-opacity=\"0.{opacity:02}\"/>"
        );
    }
    out.push_str(
        "<rect x=\"60\" y=\"560\" width=\"880\" height=\"380\" rx=\"36\" fill=\"#000\" fill-opacity=\"0.35\"/>\
         <g fill=\"#fff\" font-family=\"Helvetica, Arial, sans-serif\">",
    );
    let _ = write!(
        out,
        "<text x=\"100\" y=\"660\" font-size=\"56\" font-weight=\"700\">{}</text>",
        clip(text.event_name, 28)
    );
    let mut y = 740;
    if let Some(t) = text.ticket_type {
        let _ = write!(out, "<text x=\"100\" y=\"{y}\" font-size=\"44\">{}</text>", clip(t, 34));
        y += 70;
    }
    let _ =
        write!(out, "<text x=\"100\" y=\"{y}\" font-size=\"34\" fill-opacity=\"0.85\">{}</text>", clip(text.date, 40));
    y += 56;
    let _ =
        write!(out, "<text x=\"100\" y=\"{y}\" font-size=\"34\" fill-opacity=\"0.85\">{}</text>", clip(text.venue, 44));
    out.push_str("<text x=\"100\" y=\"140\" font-size=\"40\" font-weight=\"700\" letter-spacing=\"8\">ENTRADA</text>");
    out.push_str("</g></svg>");
    out
}

/// The first `max` characters, control characters dropped, XML-escaped.
fn clip(s: &str, max: usize) -> String {
    let kept: Vec<char> = s.chars().filter(|c| !c.is_control()).collect();
    let mut t: String = kept.iter().take(max).collect();
    if kept.len() > max {
        t.push('…');
    }
    escape(&t)
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(name: &'a str) -> ArtText<'a> {
        ArtText { event_name: name, ticket_type: Some("General admission"), date: "2030-06-01", venue: "Arena" }
    }

    /// The same ids give the same bytes; other ids give other colours.
    #[test]
    fn deterministic_per_seed() {
        assert_eq!(svg("a/b", &text("Show")), svg("a/b", &text("Show")));
        assert_ne!(svg("a/b", &text("Show")), svg("a/c", &text("Show")));
    }

    /// Markup in an organizer's text arrives as text, never as elements.
    #[test]
    fn text_is_escaped() {
        let s = svg("x", &text("<i>x</i> & \"q\" 'a'\u{0}"));
        assert!(s.contains("&lt;i&gt;x&lt;/i&gt; &amp; &quot;q&quot; &#39;a&#39;"), "{s}");
        let t = ArtText { ticket_type: Some("<script>alert(1)</script>"), ..text("Show") };
        let s2 = svg("x", &t);
        assert!(!s2.contains("<script") && s2.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{s2}");
        assert!(!s.contains('\u{0}'));
        assert!(!s.contains("href") && !s.contains("onload"));
    }
}
