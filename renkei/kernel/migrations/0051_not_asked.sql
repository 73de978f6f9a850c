-- renkei schema, version 51: an attempt permitted ahead and never asked.
--
--  * The hub brokers ahead the linkages a flow will certainly ask for next (in the call the flow
--    makes anyway): it decides, records and permits each as at its step. One the flow never
--    reaches (an earlier step failed or was denied, the flow was rejected, cancelled or
--    continued as new) ends as "not_asked": permitted, and the provider never received it.
ALTER TABLE records.attempt_outcomes DROP CONSTRAINT attempt_outcomes_outcome_check;
ALTER TABLE records.attempt_outcomes ADD CONSTRAINT attempt_outcomes_outcome_check
    CHECK (outcome IN (
        'provided', 'denied', 'no_answer', 'failed', 'cancelled', 'unreceipted', 'not_asked'
    ));
