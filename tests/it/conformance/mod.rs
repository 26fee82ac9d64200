//! One conformance suite for every store: the same assertions run against
//! `SqliteStore` and `PostgresStore`.
//!
//! Each case is an async function taking a [`harness::Harness`], which opens
//! as many store instances on one fresh database as the case needs (two
//! instances stand for two host processes). The `conformance!` macro below
//! turns every case into `conformance::sqlite::<case>` and
//! `conformance::postgres::<case>`.
//!
//! The PostgreSQL side needs the `postgres` feature and a database URL in
//! `LIAISON_TEST_PG_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`);
//! each test works in its own schema, dropped at the end. Without the URL it
//! prints "skipping PostgreSQL: LIAISON_TEST_PG_URL not set" and passes —
//! unless `LIAISON_REQUIRE_PG=1`, which CI sets: then a missing URL, a
//! build without the feature or an unreachable server fails the test. A set
//! URL that cannot be reached fails in any case.

mod alerts;
mod batches;
mod callback_races;
mod callbacks;
mod circuits;
mod claims;
mod deliveries;
mod desk;
pub mod harness;
mod health_stats;
pub mod hostile;
mod impact;
mod input;
mod journal;
mod ledger;
mod limits;
mod lookup;
mod notifications;
mod ops_reads;
mod poison;
#[cfg(feature = "postgres")]
mod postgres_counters;
#[cfg(feature = "postgres")]
mod postgres_only;
mod privacy;
mod recovery;
mod results;
mod retention;
mod silence;
mod transitions;

macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let harness = super::harness::Harness::sqlite();
                    super::$module::$case(&harness).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(harness) = super::harness::Harness::postgres().await else {
                        return;
                    };
                    super::$module::$case(&harness).await;
                }
            )*
        }
    };
}

conformance! {
    circuits::the_circuit_is_shared_one_probe_goes_out_and_its_answer_decides_for_all,
    circuits::concurrent_failure_reports_are_all_counted,
    circuits::one_instance_holds_a_role_and_another_takes_over_when_its_lease_runs_out,
    circuits::bad_circuit_and_role_input_is_refused_and_writes_nothing,
    batches::a_batch_of_results_answers_and_writes_as_each_alone_would,
    batches::a_batch_applies_callbacks_that_arrived_before_it,
    batches::a_batch_gives_each_submission_the_callbacks_waiting_for_it,
    batches::a_batch_enqueue_keeps_input_order_and_sees_its_own_keys,
    batches::a_batch_records_deliveries_only_for_partners_that_take_results,
    privacy::retention_clears_personal_data_and_keeps_what_happened,
    privacy::forget_erases_by_id_keeps_the_skeleton_and_journals_who_and_why,
    privacy::forget_refuses_unfinished_work_and_changes_nothing,
    privacy::fingerprints_are_keyed_per_store_and_still_detect_conflicts,
    privacy::a_ledger_row_from_before_keying_still_deduplicates_and_detects_conflicts,
    privacy::forget_through_the_api_and_the_ops_api,
    notifications::alerts_go_to_their_owners_sinks_and_the_catch_all,
    notifications::a_sink_that_fails_twice_is_retried_and_delivered_once,
    notifications::a_sink_that_always_fails_ends_failed_and_health_says_so_until_it_works,
    notifications::a_hanging_sink_times_out_and_is_retried_without_holding_up_the_others,
    transitions::every_pair_of_states_follows_the_table,
    transitions::an_attempt_in_flight_is_settled_only_under_its_lease,
    transitions::cancelling_in_flight_closes_the_attempt_and_fences_the_worker,
    transitions::every_change_answers_with_the_row_a_read_returns,
    ledger::same_key_and_payload_returns_the_existing_submission,
    ledger::an_enqueued_line_is_read_from_the_row_and_never_twice,
    ledger::same_key_with_another_payload_is_a_conflict_naming_the_holder,
    ledger::keys_are_per_partner,
    ledger::concurrent_enqueues_of_one_key_create_one_submission,
    ledger::invalid_keys_are_rejected_and_nothing_is_written,
    ledger::a_generated_key_makes_every_enqueue_new,
    ledger::pruning_removes_only_expired_keys_of_terminal_submissions,
    ledger::an_expired_key_of_finished_work_is_free_even_before_pruning,
    ledger::payloads_and_correlation_round_trip_exactly,
    input::an_oversized_payload_is_refused_at_the_default_cap,
    input::the_payload_cap_is_configurable,
    input::one_bad_item_refuses_the_whole_batch,
    input::a_batch_may_repeat_a_key_with_the_same_payload,
    input::bad_names_and_unknown_ids_get_clear_errors,
    input::list_filters_and_pages,
    input::long_texts_are_bounded,
    lookup::get_by_key_finds_the_submission_of_that_partner,
    lookup::get_by_key_after_a_replay_under_a_fresh_key,
    lookup::a_correlation_filter_matches_one_field_exactly,
    lookup::updated_since_pulls_what_changed,
    limits::concurrency_counts_the_live_leases_of_every_claimer,
    limits::concurrent_claimers_together_never_exceed_the_concurrency,
    limits::a_freed_slot_goes_to_the_claimer_that_waits_not_back_to_its_holder,
    limits::the_rate_budget_is_shared_by_every_claimer,
    limits::racing_claimers_never_overspend_the_rate,
    desk::a_submission_is_found_by_reference_or_any_correlation_value,
    desk::open_work_by_deadline_pages_with_a_cursor,
    desk::callbacks_and_deliveries_page_with_a_cursor,
    journal::pause_resume_and_acknowledge_are_journaled_with_actor_and_reason,
    journal::bulk_dismissal_and_an_unmatched_reprocess_are_journaled_once,
    claims::concurrent_claimers_never_receive_the_same_submission,
    claims::a_claims_line_is_read_from_its_attempt_in_its_place,
    claims::a_stale_token_changes_nothing_and_is_journaled,
    claims::expired_leases_come_back_and_are_journaled,
    claims::retries_wait_for_their_due_time,
    claims::not_before_and_priority_shape_the_claim_order,
    claims::one_claim_takes_at_most_1024_in_claim_order,
    claims::claims_are_per_partner,
    claims::an_ordering_key_is_sent_one_at_a_time_in_enqueue_order,
    claims::concurrent_claimers_respect_ordering_keys,
    claims::a_dead_letter_holds_its_successors_unless_configured_otherwise,
    claims::a_partner_reference_belongs_to_one_submission,
    poison::an_expired_lease_past_each_limit_dead_letters_and_below_them_requeues,
    poison::a_report_resets_the_count_and_a_replay_starts_it_again,
    callbacks::a_callback_is_stored_raw_and_applied_once,
    callbacks::a_callback_stored_and_settled_at_once_is_kept_and_judged_alike,
    callbacks::a_repeated_event_with_another_outcome_is_conflicting,
    callbacks::a_failure_and_progress_are_applied_as_reported,
    callbacks::an_early_callback_waits_and_is_applied_with_the_acceptance,
    callbacks::an_early_callback_delivered_twice_is_applied_once,
    callbacks::early_callbacks_settled_by_a_batch_end_as_one_at_a_time,
    callback_races::a_callback_racing_its_acceptance_is_applied,
    callbacks::a_late_callback_after_cancel_is_noted,
    callbacks::rejected_and_malformed_are_quarantined_and_reprocessable,
    callbacks::dismissing_takes_a_callback_out_of_the_quarantine_and_its_counts,
    callback_races::concurrent_deliveries_of_one_callback_apply_once,
    callbacks::unmatched_callbacks_expire_into_quarantine,
    callbacks::callbacks_are_listed_newest_or_oldest_first,
    callbacks::overdue_results_are_listed_and_deadlines_move,
    callbacks::overdue_results_are_taken_once_for_polling,
    recovery::a_replay_under_a_fresh_key_records_it_in_the_ledger,
    recovery::a_replay_may_keep_the_key_and_is_refused_elsewhere,
    recovery::notes_go_on_the_timeline_and_change_nothing,
    recovery::what_one_instance_commits_another_sees,
    recovery::a_partner_pause_is_shared_by_every_instance,
    health_stats::state_counts_stay_exact_through_transitions,
    health_stats::counts_stay_exact_under_concurrent_writers,
    health_stats::windows_give_outcomes_latencies_and_work_past_budget,
    health_stats::business_values_at_the_cap_sum_exactly_and_above_it_are_refused,
    impact::values_are_summed_per_currency_and_split_by_kind_and_age,
    impact::business_deadlines_are_reported_near_and_missed,
    impact::bad_currencies_and_deadlines_store_nothing,
    impact::a_deadline_alert_opens_before_the_breach_and_resolves_with_the_work,
    ops_reads::hourly_counts_agree_with_a_list_and_count,
    ops_reads::lists_without_payloads_or_bodies_read_neither,
    ops_reads::a_list_of_several_states_pages_in_enqueue_order,
    silence::instances_beat_stop_and_age_out,
    silence::expected_traffic_is_recorded_and_counted,
    silence::due_work_is_dated_from_the_queue_and_from_expired_leases,
    silence::a_partner_whose_every_engine_is_killed_turns_down_within_three_beats,
    silence::a_stopped_engine_serves_nothing_and_stale_instances_age_out,
    silence::fresh_work_nobody_ever_served_is_not_down_yet,
    silence::silence_opens_an_alert_and_traffic_resolves_it,
    silence::outside_its_windows_silence_is_not_checked,
    alerts::one_alert_opens_under_concurrent_opens,
    alerts::an_alert_is_notified_acknowledged_resolved_and_reopens,
    deliveries::a_delivery_is_recorded_with_each_finishing_change_when_enabled,
    deliveries::deliveries_of_one_ordering_key_go_in_enqueue_order,
    deliveries::a_claim_over_several_partners_takes_the_oldest_due_of_all,
    deliveries::a_stale_lease_cannot_end_a_delivery_and_parked_ones_are_rerun,
    deliveries::a_late_result_and_a_callback_after_cancel_are_delivered_as_the_timeline_says,
    results::a_result_is_kept_with_the_submission_and_left_out_of_light_lists,
    results::a_replay_clears_the_result_and_a_manual_resolution_keeps_or_replaces_it,
    results::a_result_over_the_cap_is_a_marker_with_a_timeline_line,
    results::a_callback_result_is_kept_and_another_document_is_a_conflict,
    results::an_early_callback_brings_its_result_when_it_matches_later,
    results::retention_purges_the_result_with_the_payload,
    retention::a_purge_removes_exactly_what_is_due,
    retention::rejected_bodies_have_their_own_cutoff,
    retention::callback_rows_are_deleted_past_their_cutoffs,
    callbacks::a_rejection_settled_as_metadata_only_clears_body_and_headers,
    retention::a_purge_works_in_batches_and_says_when_more_is_due,
    hostile::hostile_sql_metacharacters_in_every_string_field,
    hostile::hostile_keys_over_255_bytes_or_with_control_characters_are_refused,
    hostile::hostile_a_replay_key_taken_by_other_work_is_a_conflict,
    hostile::hostile_numbers_out_of_range,
    hostile::hostile_timestamps_far_in_the_past_and_future,
    hostile::hostile_deeply_nested_and_huge_payloads,
    hostile::hostile_unknown_partner_names,
}

/// Built without the `postgres` feature, the PostgreSQL side cannot run:
/// say so, and fail when CI demands it.
#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_side_is_not_built() {
    assert!(
        !harness::postgres_required(),
        "LIAISON_REQUIRE_PG=1 but the tests were built without the `postgres` feature"
    );
    eprintln!("skipping PostgreSQL: built without the `postgres` feature");
}
