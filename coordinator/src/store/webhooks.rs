//! The storage interface of webhooks: each project's sealed secret and its bounded
//! delivery log, with the raw requests kept for redelivery.

use super::StoreError;
use crate::domain::{Delivery, KeptRequest, Provider, WebhookSecret};

/// Webhook secrets and delivery logs, per project. A project's log keeps its newest
/// [`crate::domain::MAX_DELIVERIES`] entries; raw requests are kept for the newest
/// [`crate::domain::MAX_KEPT_REQUESTS`] (and at most
/// [`crate::domain::MAX_KEPT_REQUEST_BYTES`]). Deleting a project deletes both.
pub trait WebhookStore {
    fn webhook_secret(&self, project: &str) -> Result<Option<WebhookSecret>, StoreError>;
    /// Replaces the project's secret (the old one stops working at once); `NotFound`
    /// for an unknown project.
    fn set_webhook_secret(&self, secret: &WebhookSecret) -> Result<(), StoreError>;

    /// Appends an entry (with its raw request, if kept) and prunes the oldest beyond the
    /// bounds; returns the entry with its `order` assigned.
    fn record_delivery(
        &self,
        delivery: &Delivery,
        request: Option<&KeptRequest>,
    ) -> Result<Delivery, StoreError>;
    /// A page of the project's log, newest first, and the number of entries kept.
    fn deliveries(
        &self,
        project: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<Delivery>), StoreError>;
    fn delivery(&self, project: &str, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// The raw request of an entry, while it is kept.
    fn kept_request(&self, project: &str, id: &str) -> Result<Option<KeptRequest>, StoreError>;
    /// The earliest kept entry with this provider delivery id whose outcome was not
    /// `rejected`: a delivery already acted on.
    fn accepted_delivery(
        &self,
        project: &str,
        provider: Provider,
        delivery_id: &str,
    ) -> Result<Option<Delivery>, StoreError>;
}
