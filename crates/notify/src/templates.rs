//! Mail templates: plain text, Spanish and English side by side until user
//! language preferences exist. Each template has a stable name, logged in
//! `mail_deliveries`.

use crate::mailer::OutgoingMail;
use entrada_storage::events::DomainEvent;

fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", m / 100, m % 100)
}

/// The mail for an event, or `None` when the event sends no mail.
pub fn render(event: &DomainEvent, public_url: &str) -> Option<OutgoingMail> {
    let base = public_url.trim_end_matches('/');
    match event {
        DomainEvent::EmailVerificationRequested { email, token, .. } => Some(OutgoingMail {
            template: "email_verification",
            to: email.clone(),
            subject: "Confirm your email · Confirma tu correo".into(),
            body: format!(
                "Welcome to Entrada.\n\nConfirm your email address by opening:\n{base}/verify-email?token={token}\n\n\
                 or send this code to POST /api/v1/auth/verify-email: {token}\n\nThe link expires in 48 hours.\n\n\
                 Bienvenido a Entrada. Confirma tu correo con el enlace de arriba.\n"
            ),
        }),
        DomainEvent::PasswordResetRequested { email, token, .. } => Some(OutgoingMail {
            template: "password_reset",
            to: email.clone(),
            subject: "Reset your password · Restablece tu contraseña".into(),
            body: format!(
                "Someone asked to reset the password of your Entrada account.\n\n\
                 Choose a new password here:\n{base}/reset-password?token={token}\n\n\
                 The link expires in 1 hour. If it was not you, ignore this mail.\n\n\
                 Alguien pidió restablecer tu contraseña. Si no fuiste tú, ignora este correo.\n"
            ),
        }),
        DomainEvent::OrderPaid { order_id, buyer_email, event_name, total_minor, currency, tickets, .. } => {
            Some(OutgoingMail {
                template: "order_confirmation",
                to: buyer_email.clone(),
                subject: format!("Your tickets for {event_name} · Tus entradas"),
                body: format!(
                    "Thank you for your order {order_id}.\n\nEvent: {event_name}\nTickets: {}\nTotal paid: {}\n\n\
                     Your tickets are in your wallet: {base}/wallet\n\n\
                     Gracias por tu compra. Tus entradas están en tu cartera.\n",
                    tickets.len(),
                    money(*total_minor, currency)
                ),
            })
        }
        DomainEvent::OrderRefunded { order_id, buyer_email, event_name, amount_minor, currency } => {
            Some(OutgoingMail {
                template: "order_refunded",
                to: buyer_email.clone(),
                subject: format!("Refund for {event_name} · Reembolso"),
                body: format!(
                    "Your order {order_id} for {event_name} was refunded: {}.\n\
                     Its tickets are no longer valid.\n\n\
                     Tu pedido fue reembolsado y sus entradas ya no son válidas.\n",
                    money(*amount_minor, currency)
                ),
            })
        }
        DomainEvent::GiftOffered {
            gift_id,
            event_name,
            sender_name,
            recipient_email,
            has_account,
            claim_token,
            expires_at_ms,
            ..
        } => {
            let until = time::OffsetDateTime::from_unix_timestamp(expires_at_ms / 1000)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default();
            let how = if *has_account {
                format!("Open your Entrada wallet to accept or decline it:\n{base}/gifts/{gift_id}?token={claim_token}")
            } else {
                format!(
                    "Create your free Entrada account with this email address ({recipient_email}), then accept it \
                     here:\n{base}/gifts/{gift_id}?token={claim_token}"
                )
            };
            Some(OutgoingMail {
                template: if *has_account { "gift_offered" } else { "gift_invitation" },
                to: recipient_email.clone(),
                subject: format!("{sender_name} sent you a ticket for {event_name} · Te han regalado una entrada"),
                body: format!(
                    "{sender_name} wants to give you a ticket for {event_name}.\n\n{how}\n\n\
                     Claim code: {claim_token}\nThe offer is open until {until}.\n\n\
                     {sender_name} quiere regalarte una entrada para {event_name}.\n"
                ),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use entrada_primitives::ids::{EventId, OrderId, UserId};

    #[test]
    fn order_confirmation_shows_amount_in_major_units() {
        let e = DomainEvent::OrderPaid {
            order_id: OrderId::new(),
            event_id: EventId::new(),
            buyer: UserId::new(),
            buyer_email: "ana@example.com".into(),
            event_name: "Noche".into(),
            total_minor: 13405,
            currency: "EUR".into(),
            tickets: vec![],
        };
        let m = render(&e, "http://x").unwrap();
        assert_eq!(m.to, "ana@example.com");
        assert!(m.body.contains("134.05 EUR"), "{}", m.body);
    }

    #[test]
    fn a_gift_to_an_address_without_account_is_an_invitation_with_the_claim_code() {
        let gift = |has_account| DomainEvent::GiftOffered {
            gift_id: "g1".into(),
            ticket_id: entrada_primitives::ids::TicketId::new(),
            event_name: "Noche".into(),
            sender_name: "Ana".into(),
            recipient_email: "luis@example.com".into(),
            has_account,
            claim_token: "tok123".into(),
            expires_at_ms: 1_900_000_000_000,
        };
        let m = render(&gift(false), "http://x").unwrap();
        assert_eq!((m.template, m.to.as_str()), ("gift_invitation", "luis@example.com"));
        assert!(m.body.contains("Create your free Entrada account"), "{}", m.body);
        assert!(m.body.contains("Claim code: tok123") && m.body.contains("http://x/gifts/g1?token=tok123"));
        assert_eq!(render(&gift(true), "http://x").unwrap().template, "gift_offered");
    }

    #[test]
    fn events_without_mail_render_nothing() {
        assert!(render(&DomainEvent::OrderExpired { order_id: OrderId::new() }, "").is_none());
    }
}
