//! The names of a ScaledTarget's status conditions, their reasons and ebb's Event reasons: one
//! place for the controller, `ebb status`, the CRD's printer columns and the tests.

// Condition types.
/// ebb decides for the target (False: why it cannot).
pub const READY: &str = "Ready";
/// Some metric reads above its activation (zero unless set): the target has work.
pub const ACTIVE: &str = "Active";
/// Every source failed on several readings in a row: ebb holds, never scales down.
pub const FALLBACK: &str = "Fallback";
/// Scaling is paused by annotation.
pub const PAUSED: &str = "Paused";
/// A rule (bounds, rate limits) changed the recommendation.
pub const SCALING_LIMITED: &str = "ScalingLimited";
/// Every metric was read at the last poll (False: which failed and why; the reason is the
/// first failing metric's).
pub const SOURCES_HEALTHY: &str = "SourcesHealthy";

// Condition reasons (ebb's own; ScalingLimited also carries the HPA's reasons).
/// Active: a metric reads above its activation (the message names it).
pub const ABOVE_ACTIVATION: &str = "AboveActivation";
/// Active False: every metric was read at or below its activation.
pub const BELOW_ACTIVATION: &str = "BelowActivation";
/// Active False: no metric reads above its activation and some were not read: activity is
/// unknown, so a target is not scaled to zero on it.
pub const ACTIVITY_UNKNOWN: &str = "ActivityUnknown";
/// Paused: at a count.
pub const PAUSED_AT_REPLICAS: &str = "PausedAtReplicas";
/// Paused False.
pub const NOT_PAUSED: &str = "NotPaused";
/// Ready False: a metric's target cannot be read.
pub const INVALID_TARGET: &str = "InvalidTarget";
/// Ready False: the formula does not parse.
pub const INVALID_FORMULA: &str = "InvalidFormula";
/// A formula has no value (an input without one, or a division by zero).
pub const FORMULA_NO_VALUE: &str = "FormulaNoValue";
/// The pods of a scale-up do not become Ready (True, with the pattern as reason); also the
/// rule while replicas are held back for it.
pub const SCALING_STALLED: &str = "ScalingStalled";
/// ScalingStalled False.
pub const SCALE_UPS_READY: &str = "ScaleUpsReady";
/// Ready: decided (Direct, Shadow).
pub const DECIDED: &str = "Decided";
/// Rule: a target at 0 replicas had a metric above its activation and was woken.
pub const ACTIVATED: &str = "Activated";
/// Rule: every metric stayed at or below its activation for the cooldown: scaled to zero.
pub const IDLE_AFTER_COOLDOWN: &str = "IdleAfterCooldown";
/// Rule: at 0 replicas with no metric above its activation (a failing source does not wake
/// a target either).
pub const IDLE: &str = "Idle";
/// Ready: the owned HPA is in sync (Hpa).
pub const HPA_SYNCED: &str = "HpaSynced";
/// Ready False: another HPA scales the workload.
pub const FOREIGN_HPA: &str = "ForeignHpa";
/// Fallback: every source fails.
pub const SOURCES_FAILING: &str = "SourcesFailing";
/// Fallback False.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
/// Ready False: the workload `spec.targetRef` names does not exist.
pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
/// Ready False: the workload's kind has no `/scale` subresource.
pub const NO_SCALE_SUBRESOURCE: &str = "NoScaleSubresource";
/// Ready False: ebb's RBAC does not allow what scaling the workload needs.
pub const FORBIDDEN: &str = "Forbidden";
/// Ready False: the API server does not serve `spec.targetRef`'s kind.
pub const UNKNOWN_KIND: &str = "UnknownKind";
/// Ready False: the API server refused ebb's request as invalid.
pub const REJECTED: &str = "Rejected";
/// SourcesHealthy: every metric was read.
pub const ALL_METRICS_READ: &str = "AllMetricsRead";
/// SourcesHealthy False: the query ran and found nothing (an empty vector, no queue, NaN).
pub const NO_DATA: &str = "NoData";
/// SourcesHealthy False: the upstream could not be reached.
pub const SOURCE_UNREACHABLE: &str = "SourceUnreachable";
/// SourcesHealthy False: the upstream did not answer in time.
pub const SOURCE_TIMEOUT: &str = "SourceTimeout";
/// SourcesHealthy False: the upstream answered with an error of its own.
pub const SOURCE_ERROR: &str = "SourceError";
/// SourcesHealthy False: a query returned several series where one number is needed.
pub const AMBIGUOUS_QUERY: &str = "AmbiguousQuery";
/// SourcesHealthy False: the upstream refused the credentials.
pub const AUTHENTICATION_REFUSED: &str = "AuthenticationRefused";
/// SourcesHealthy False: the upstream rejected the query (bad PromQL).
pub const QUERY_REJECTED: &str = "QueryRejected";
/// SourcesHealthy False: the queue or vhost does not exist upstream.
pub const NOT_FOUND_UPSTREAM: &str = "NotFoundUpstream";
/// SourcesHealthy False: the Secret a metric names does not exist.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// SourcesHealthy False: the Secret lies outside the namespaces ebb may read Secrets in.
pub const SECRET_RESTRICTED: &str = "SecretRestricted";
/// SourcesHealthy False: the metric's configuration or its Secret is unusable (a missing key).
pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
/// SourcesHealthy False: the last answer is older than a refresh should take.
pub const STALE_READINGS: &str = "StaleReadings";
/// SourcesHealthy False: a newly registered query has not been answered yet.
pub const NO_ANSWER_YET: &str = "NoAnswerYet";
/// A transient failure (timeout, 5xx, conflict, throttling): the reason counted in
/// `ebb_reconcile_errors_total`, never a condition.
pub const API_UNAVAILABLE: &str = "ApiUnavailable";

// Event reasons (the audit trail).
/// ebb scaled the workload.
pub const EVENT_SCALED: &str = "Scaled";
/// Mode Shadow: what ebb would have done.
pub const EVENT_SHADOW_DECISION: &str = "ShadowDecision";
/// A `/scale` write failed.
pub const EVENT_FAILED_RESCALE: &str = "FailedRescale";
/// ebb called a human.
pub const EVENT_ESCALATED: &str = "Escalated";
/// Every call of an escalation webhook failed.
pub const EVENT_ESCALATION_FAILED: &str = "EscalationFailed";
/// Learned values moved materially.
pub const EVENT_LEARNED_CHANGED: &str = "LearnedChanged";
/// ebb took over an existing HPA (`ebb.dev/adopt-hpa`).
pub const EVENT_ADOPTED_HPA: &str = "AdoptedHpa";
