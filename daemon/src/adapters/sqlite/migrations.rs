//! Versioned schema. Each entry moves the schema one version up; the version
//! is kept in `PRAGMA user_version`. Never edit a released migration: add one.

pub const MIGRATIONS: &[&str] = &[
    // 1: contacts, companies, deals, events, scores, fatigue, outbox, decisions.
    r#"
CREATE TABLE companies (
    rowid       INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    name        TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE company_signals (
    seq         INTEGER PRIMARY KEY,
    company     INTEGER NOT NULL REFERENCES companies(rowid) ON DELETE CASCADE,
    dedup       BLOB NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    props       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX company_signals_by_company ON company_signals(company, at);

CREATE TABLE contacts (
    rowid       INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    record      TEXT NOT NULL,
    company     TEXT,
    email       TEXT
);
CREATE INDEX contacts_by_company ON contacts(company);
CREATE INDEX contacts_by_email ON contacts(email);

CREATE TABLE deals (
    rowid       INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    contact     INTEGER REFERENCES contacts(rowid) ON DELETE CASCADE,
    record      TEXT NOT NULL
);
CREATE INDEX deals_by_contact ON deals(contact);

-- Append-only, clustered by contact and time: a full rebuild reads each
-- contact's history in one sequential pass, an incremental pass finds new
-- events by `seq`. `dedup` is a 16-byte hash of the producer's event id, or
-- of the event's content when it has none, so re-importing a file adds
-- nothing.
CREATE TABLE events (
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    dedup       BLOB NOT NULL UNIQUE,
    event_id    TEXT,
    type        TEXT NOT NULL,
    channel     TEXT,
    props       TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (contact, at, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_seq ON events(seq);

-- Each contact's current score; `next_change_at` is when time alone may
-- change it, so a pass finds the contacts to rescore through an index.
CREATE TABLE scores (
    contact        INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    score          INTEGER NOT NULL,
    band           TEXT NOT NULL,
    next_change_at INTEGER,
    scored_at      INTEGER NOT NULL,
    -- [[at, score], …]: the snapshots of the jump window, so that a pass
    -- detects jumps without reading the history.
    recent         TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX scores_next_change ON scores(next_change_at) WHERE next_change_at IS NOT NULL;

-- The film: one row each time a contact's score or band changed.
CREATE TABLE score_snapshots (
    seq         INTEGER PRIMARY KEY,
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    score       INTEGER NOT NULL,
    band        TEXT NOT NULL
);
CREATE INDEX score_snapshots_by_contact ON score_snapshots(contact, at);

-- Band crossings and jumps, for the follow-up engine to react to.
CREATE TABLE score_changes (
    seq         INTEGER PRIMARY KEY,
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    from_score  INTEGER NOT NULL,
    to_score    INTEGER NOT NULL,
    from_band   TEXT NOT NULL,
    to_band     TEXT NOT NULL,
    since       INTEGER NOT NULL
);
CREATE INDEX score_changes_by_contact ON score_changes(contact, at);

-- Contacts whose profile (or company) changed since they were scored.
CREATE TABLE rescore_queue (
    contact     INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE
);

-- Small named values: the last event rescored, the rules' fingerprint.
CREATE TABLE meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);



-- A pending row's `due_at` is when it may next be claimed: its planned
-- instant, its defer or retry instant, or, once claimed, its lease expiry.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY,
    idem_key    TEXT NOT NULL UNIQUE,
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    followup    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    channel     TEXT NOT NULL,
    state       TEXT NOT NULL,
    due_at      INTEGER NOT NULL,
    first_due   INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    payload     TEXT NOT NULL DEFAULT '{}',
    last_error  TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX outbox_ready ON outbox(due_at)
    WHERE state IN ('planned', 'deferred', 'retrying', 'claimed');
CREATE INDEX outbox_by_state ON outbox(state);
CREATE INDEX outbox_by_contact ON outbox(contact);

-- Sends the guard allowed that are not delivered yet. They weigh on fatigue
-- and caps from the instant they are allowed, in the same transaction as the
-- claim, so two decisions can never both take the last slot of a cap. A
-- delivered send becomes an event; a failed one is released.
CREATE TABLE fatigue_ledger (
    outbox      INTEGER PRIMARY KEY REFERENCES outbox(seq) ON DELETE CASCADE,
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    channel     TEXT NOT NULL
);
CREATE INDEX fatigue_ledger_by_contact ON fatigue_ledger(contact);

CREATE TABLE decision_log (
    seq         INTEGER PRIMARY KEY,
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    followup    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    until       INTEGER,
    reasons     TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX decision_log_by_contact ON decision_log(contact, at);

-- The last tick each schedule ran, and who holds it while it runs.
CREATE TABLE schedule_state (
    name        TEXT PRIMARY KEY,
    last_tick   INTEGER,
    lease_owner TEXT,
    lease_until INTEGER
);

-- What each scheduled job did: for operators, and to prove nothing overlaps.
CREATE TABLE job_runs (
    seq         INTEGER PRIMARY KEY,
    schedule    TEXT NOT NULL,
    job         TEXT NOT NULL,
    tick        INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT
);
CREATE INDEX job_runs_by_schedule ON job_runs(schedule, tick);
"#,
    // 2: the planner's bookkeeping and broadcasts.
    r#"
-- When a contact must be planned again although nothing happens to it (its
-- next nurture step or broadcast comes within the arbitration window).
CREATE TABLE plan_wake (
    contact     INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL
);
CREATE INDEX plan_wake_by_at ON plan_wake(at);

-- Broadcasts of our own news, created at run time (CLI, API).
CREATE TABLE broadcasts (
    id          TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
"#,
    // 3: the planner's memo of each contact's older history.
    r#"
-- What the planner folded of a contact's history: every event at or before
-- `upto` (micros), in a compact form (see followups::memo). Derived data: a
-- pass rebuilds it from the events when it cannot trust it.
CREATE TABLE plan_memo (
    contact     INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    upto        INTEGER NOT NULL,
    memo        BLOB NOT NULL
);
"#,
    // 4: contacts queued for rescoring are taken by one pass at a time.
    r#"
-- The pass that took a queued contact, and until when (micros): another pass
-- takes it only once the lease expired.
ALTER TABLE rescore_queue ADD COLUMN owner TEXT;
ALTER TABLE rescore_queue ADD COLUMN lease_until INTEGER;
"#,
    // 5: the call desk: what the scoring pass keeps per contact, and the
    // normalised keys that find duplicates.
    r#"
-- Derived data (see desk::status): the prospect status, what set it, the
-- last call, the call-back and documentation dates. A contact nothing
-- concerns has no row: FROID, never called.
CREATE TABLE contact_desk (
    contact      INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    status       TEXT NOT NULL,
    since        INTEGER,
    set_by       TEXT,
    calls        INTEGER NOT NULL,
    last_call_at INTEGER,
    last_code    TEXT,
    callback_at  INTEGER,
    doc_at       INTEGER,
    do_not_call  TEXT,
    owner        TEXT
);
CREATE INDEX contact_desk_by_status ON contact_desk(status);
CREATE INDEX contact_desk_callbacks ON contact_desk(callback_at) WHERE callback_at IS NOT NULL;

-- The events the desk and the reports count (calls, meetings, purchases,
-- documentation, reactions to a send), so that they never scan `events`.
CREATE TABLE desk_events (
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    code        TEXT NOT NULL,
    key         TEXT NOT NULL,
    owner       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (contact, at, kind, code, key)
) WITHOUT ROWID;
CREATE INDEX desk_events_by_kind ON desk_events(kind, at);

ALTER TABLE contacts ADD COLUMN email_key TEXT;
ALTER TABLE contacts ADD COLUMN phone_key TEXT;
UPDATE contacts SET email_key = lower(replace(trim(email), ' ', '')) WHERE email LIKE '%@%';
CREATE INDEX contacts_by_email_key ON contacts(email_key) WHERE email_key IS NOT NULL;
CREATE INDEX contacts_by_phone_key ON contacts(phone_key) WHERE phone_key IS NOT NULL;
"#,
    // 6: the dashboard's aggregates (issue #19): counts kept by triggers in
    // the transaction of every write, so that no page scans scores, the
    // outbox or the logs; and the pressure grid the pressure pass keeps.
    r#"
-- Scores per one-point bucket (hundredths, floored) and band.
CREATE TABLE ui_score_buckets (
    lo          INTEGER NOT NULL,
    band        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (lo, band)
) WITHOUT ROWID;
INSERT INTO ui_score_buckets
    SELECT score - ((score % 100) + 100) % 100, band, count(*) FROM scores GROUP BY 1, 2;
CREATE TRIGGER ui_scores_insert AFTER INSERT ON scores BEGIN
    INSERT INTO ui_score_buckets VALUES (NEW.score - ((NEW.score % 100) + 100) % 100, NEW.band, 1)
        ON CONFLICT (lo, band) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER ui_scores_delete AFTER DELETE ON scores BEGIN
    UPDATE ui_score_buckets SET n = n - 1
        WHERE lo = OLD.score - ((OLD.score % 100) + 100) % 100 AND band = OLD.band;
END;
CREATE TRIGGER ui_scores_update AFTER UPDATE OF score, band ON scores
    WHEN OLD.score <> NEW.score OR OLD.band <> NEW.band BEGIN
    UPDATE ui_score_buckets SET n = n - 1
        WHERE lo = OLD.score - ((OLD.score % 100) + 100) % 100 AND band = OLD.band;
    INSERT INTO ui_score_buckets VALUES (NEW.score - ((NEW.score % 100) + 100) % 100, NEW.band, 1)
        ON CONFLICT (lo, band) DO UPDATE SET n = n + 1;
END;

-- Band crossings per day (days since the epoch, UTC).
CREATE TABLE ui_band_moves (
    day         INTEGER NOT NULL,
    from_band   TEXT NOT NULL,
    to_band     TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (day, from_band, to_band)
) WITHOUT ROWID;
INSERT INTO ui_band_moves
    SELECT at / 86400000000, from_band, to_band, count(*) FROM score_changes
    WHERE from_band <> to_band GROUP BY 1, 2, 3;
CREATE TRIGGER ui_moves_insert AFTER INSERT ON score_changes
    WHEN NEW.from_band <> NEW.to_band BEGIN
    INSERT INTO ui_band_moves VALUES (NEW.at / 86400000000, NEW.from_band, NEW.to_band, 1)
        ON CONFLICT (day, from_band, to_band) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER ui_moves_delete AFTER DELETE ON score_changes
    WHEN OLD.from_band <> OLD.to_band BEGIN
    UPDATE ui_band_moves SET n = n - 1
        WHERE day = OLD.at / 86400000000 AND from_band = OLD.from_band AND to_band = OLD.to_band;
END;

-- Outbox rows per day first due, follow-up, kind, channel and state.
CREATE TABLE ui_outbox_counts (
    day         INTEGER NOT NULL,
    followup    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (day, followup, kind, channel, state)
) WITHOUT ROWID;
INSERT INTO ui_outbox_counts
    SELECT first_due / 86400000000, followup, kind, channel, state, count(*) FROM outbox
    GROUP BY 1, 2, 3, 4, 5;
CREATE TRIGGER ui_outbox_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO ui_outbox_counts
        VALUES (NEW.first_due / 86400000000, NEW.followup, NEW.kind, NEW.channel, NEW.state, 1)
        ON CONFLICT (day, followup, kind, channel, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER ui_outbox_delete AFTER DELETE ON outbox BEGIN
    UPDATE ui_outbox_counts SET n = n - 1
        WHERE day = OLD.first_due / 86400000000 AND followup = OLD.followup AND kind = OLD.kind
          AND channel = OLD.channel AND state = OLD.state;
END;
CREATE TRIGGER ui_outbox_update AFTER UPDATE OF first_due, followup, kind, channel, state ON outbox
    WHEN OLD.first_due / 86400000000 <> NEW.first_due / 86400000000 OR OLD.followup <> NEW.followup
      OR OLD.kind <> NEW.kind OR OLD.channel <> NEW.channel OR OLD.state <> NEW.state BEGIN
    UPDATE ui_outbox_counts SET n = n - 1
        WHERE day = OLD.first_due / 86400000000 AND followup = OLD.followup AND kind = OLD.kind
          AND channel = OLD.channel AND state = OLD.state;
    INSERT INTO ui_outbox_counts
        VALUES (NEW.first_due / 86400000000, NEW.followup, NEW.kind, NEW.channel, NEW.state, 1)
        ON CONFLICT (day, followup, kind, channel, state) DO UPDATE SET n = n + 1;
END;

-- Guard and planner decisions per day, decision and first reason's rule.
CREATE TABLE ui_decisions (
    day         INTEGER NOT NULL,
    decision    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (day, decision, rule)
) WITHOUT ROWID;
INSERT INTO ui_decisions
    SELECT at / 86400000000, decision,
           coalesce(json_extract(reasons, '$[0].rule'), json_extract(reasons, '$.reasons[0].rule'),
                    json_extract(reasons, '$[0]'), ''),
           count(*)
    FROM decision_log GROUP BY 1, 2, 3;
CREATE TRIGGER ui_decisions_insert AFTER INSERT ON decision_log BEGIN
    INSERT INTO ui_decisions VALUES (NEW.at / 86400000000, NEW.decision,
        coalesce(json_extract(NEW.reasons, '$[0].rule'), json_extract(NEW.reasons, '$.reasons[0].rule'),
                 json_extract(NEW.reasons, '$[0]'), ''), 1)
        ON CONFLICT (day, decision, rule) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER ui_decisions_delete AFTER DELETE ON decision_log BEGIN
    UPDATE ui_decisions SET n = n - 1
        WHERE day = OLD.at / 86400000000 AND decision = OLD.decision
          AND rule = coalesce(json_extract(OLD.reasons, '$[0].rule'),
                              json_extract(OLD.reasons, '$.reasons[0].rule'),
                              json_extract(OLD.reasons, '$[0]'), '');
END;

-- The pressure pass's last grid: one row per customer (pressure and value
-- ranks 0-4, gap = pressure rank - value rank), replaced whole by each pass.
CREATE TABLE pressure_cells (
    contact       INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    id            TEXT NOT NULL,
    p             INTEGER NOT NULL,
    v             INTEGER NOT NULL,
    gap           INTEGER NOT NULL,
    fatigue       INTEGER NOT NULL,
    solicitations INTEGER NOT NULL
);
CREATE INDEX pressure_cells_by_cell ON pressure_cells(p, v, id);
CREATE INDEX pressure_cells_by_gap ON pressure_cells(gap, id);
-- Its counts, kept with it.
CREATE TABLE pressure_grid (
    p           INTEGER NOT NULL,
    v           INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (p, v)
) WITHOUT ROWID;
CREATE TRIGGER pressure_cells_delete AFTER DELETE ON pressure_cells BEGIN
    UPDATE pressure_grid SET n = n - 1 WHERE p = OLD.p AND v = OLD.v;
END;
"#,
    // 7: the dashboard's search by name through an index, not a scan.
    r#"
-- Each contact's names, lower-cased: "first last", "last first" and the
-- last name alone, so that a prefix of any finds it through the key.
CREATE TABLE ui_names (
    key         TEXT NOT NULL,
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    PRIMARY KEY (key, contact)
) WITHOUT ROWID;
CREATE INDEX ui_names_by_contact ON ui_names(contact);
CREATE VIEW ui_name_keys AS
    SELECT rowid AS contact, lower(trim(coalesce(json_extract(record, '$.first_name'), '') || ' ' ||
                                       coalesce(json_extract(record, '$.last_name'), ''))) AS key FROM contacts
    UNION SELECT rowid, lower(trim(coalesce(json_extract(record, '$.last_name'), '') || ' ' ||
                                  coalesce(json_extract(record, '$.first_name'), ''))) FROM contacts
    UNION SELECT rowid, lower(trim(coalesce(json_extract(record, '$.last_name'), ''))) FROM contacts;
INSERT INTO ui_names SELECT key, contact FROM ui_name_keys WHERE key <> '';
CREATE TRIGGER ui_names_insert AFTER INSERT ON contacts BEGIN
    INSERT OR IGNORE INTO ui_names SELECT key, contact FROM ui_name_keys
        WHERE contact = NEW.rowid AND key <> '';
END;
CREATE TRIGGER ui_names_update AFTER UPDATE OF record ON contacts BEGIN
    DELETE FROM ui_names WHERE contact = NEW.rowid;
    INSERT OR IGNORE INTO ui_names SELECT key, contact FROM ui_name_keys
        WHERE contact = NEW.rowid AND key <> '';
END;
"#,
    // 8: per-campaign figures kept as the outbox delivers and the scoring
    // pass folds the reactions.
    r#"
-- The reports read campaign figures from here, never the events: only the
-- calls stay in desk_events (for the KPIs).
DELETE FROM desk_events WHERE kind <> 'call';
-- Listing a status scans the rows: an index on it cost every pass more.
DROP INDEX contact_desk_by_status;
DROP INDEX desk_events_by_kind;
CREATE INDEX desk_events_calls ON desk_events(at) WHERE kind = 'call';

-- Per follow-up (broadcast name or sequence) and contact sent to: the sends
-- delivered, and what the scoring pass found of the contact's reactions and
-- conversions (see desk::campaigns::contact_flags), 0 or 1 each.
CREATE TABLE campaign_contacts (
    contact      INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    campaign     TEXT NOT NULL,
    sends        INTEGER NOT NULL DEFAULT 0,
    opened       INTEGER NOT NULL DEFAULT 0,
    clicked      INTEGER NOT NULL DEFAULT 0,
    unsubscribed INTEGER NOT NULL DEFAULT 0,
    in_target    INTEGER NOT NULL DEFAULT 0,
    band_up      INTEGER NOT NULL DEFAULT 0,
    meeting      INTEGER NOT NULL DEFAULT 0,
    purchase     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (contact, campaign)
) WITHOUT ROWID;

-- Their sums per campaign, kept by the triggers below: `relance campaigns`
-- reads one row per campaign.
CREATE TABLE campaign_stats (
    campaign     TEXT PRIMARY KEY,
    sent         INTEGER NOT NULL DEFAULT 0,
    contacts     INTEGER NOT NULL DEFAULT 0,
    opened       INTEGER NOT NULL DEFAULT 0,
    clicked      INTEGER NOT NULL DEFAULT 0,
    unsubscribed INTEGER NOT NULL DEFAULT 0,
    clicked_in   INTEGER NOT NULL DEFAULT 0,
    band_up      INTEGER NOT NULL DEFAULT 0,
    meeting      INTEGER NOT NULL DEFAULT 0,
    purchase     INTEGER NOT NULL DEFAULT 0,
    converted    INTEGER NOT NULL DEFAULT 0
);

CREATE TRIGGER campaign_contacts_added AFTER INSERT ON campaign_contacts BEGIN
    INSERT INTO campaign_stats (campaign) VALUES (new.campaign) ON CONFLICT(campaign) DO NOTHING;
    UPDATE campaign_stats SET sent = sent + new.sends, contacts = contacts + 1,
        opened = opened + new.opened, clicked = clicked + new.clicked,
        unsubscribed = unsubscribed + new.unsubscribed,
        clicked_in = clicked_in + (new.clicked AND new.in_target),
        band_up = band_up + new.band_up, meeting = meeting + new.meeting,
        purchase = purchase + new.purchase,
        converted = converted + (new.band_up OR new.meeting OR new.purchase)
    WHERE campaign = new.campaign;
END;
CREATE TRIGGER campaign_contacts_changed AFTER UPDATE ON campaign_contacts BEGIN
    UPDATE campaign_stats SET sent = sent + new.sends - old.sends,
        opened = opened + new.opened - old.opened, clicked = clicked + new.clicked - old.clicked,
        unsubscribed = unsubscribed + new.unsubscribed - old.unsubscribed,
        clicked_in = clicked_in + (new.clicked AND new.in_target) - (old.clicked AND old.in_target),
        band_up = band_up + new.band_up - old.band_up, meeting = meeting + new.meeting - old.meeting,
        purchase = purchase + new.purchase - old.purchase,
        converted = converted + (new.band_up OR new.meeting OR new.purchase)
            - (old.band_up OR old.meeting OR old.purchase)
    WHERE campaign = new.campaign;
END;
CREATE TRIGGER campaign_contacts_removed AFTER DELETE ON campaign_contacts BEGIN
    UPDATE campaign_stats SET sent = sent - old.sends, contacts = contacts - 1,
        opened = opened - old.opened, clicked = clicked - old.clicked,
        unsubscribed = unsubscribed - old.unsubscribed,
        clicked_in = clicked_in - (old.clicked AND old.in_target),
        band_up = band_up - old.band_up, meeting = meeting - old.meeting,
        purchase = purchase - old.purchase,
        converted = converted - (old.band_up OR old.meeting OR old.purchase)
    WHERE campaign = old.campaign;
END;

-- A delivered send counts as it is settled, by whatever writes the row.
CREATE TRIGGER outbox_sent_insert AFTER INSERT ON outbox WHEN new.state = 'sent' BEGIN
    INSERT INTO campaign_contacts (contact, campaign, sends) VALUES (new.contact, new.followup, 1)
    ON CONFLICT(contact, campaign) DO UPDATE SET sends = sends + 1;
END;
CREATE TRIGGER outbox_sent_update AFTER UPDATE OF state ON outbox
WHEN new.state = 'sent' AND old.state <> 'sent' BEGIN
    INSERT INTO campaign_contacts (contact, campaign, sends) VALUES (new.contact, new.followup, 1)
    ON CONFLICT(contact, campaign) DO UPDATE SET sends = sends + 1;
END;
INSERT INTO campaign_contacts (contact, campaign, sends)
    SELECT contact, followup, count(*) FROM outbox WHERE state = 'sent' GROUP BY contact, followup;
"#,
    // 9: retention deletes the oldest rows first, through these indexes.
    RETENTION_INDEXES,
    // 10: the fingerprint of the desk row and campaign facts written with a
    // score, so that a pass finding both unchanged writes nothing.
    r#"
ALTER TABLE scores ADD COLUMN desk_mark INTEGER;
"#,
    // 11: compact events (issue #17, see events.rs): names and short props
    // interned, no per-event de-duplication key or sequence index.
    r#"
-- Event types and channels.
CREATE TABLE event_names (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE
);
INSERT INTO event_names (name)
    SELECT type FROM events UNION SELECT channel FROM events WHERE channel IS NOT NULL;

-- Short props objects, most frequent first; the others stay inline.
CREATE TABLE event_props (
    id          INTEGER PRIMARY KEY,
    props       TEXT NOT NULL UNIQUE
);
INSERT INTO event_props (props)
    SELECT props FROM events WHERE props <> '{}' AND typeof(props) = 'text' AND length(CAST(props AS BLOB)) <= 256
    GROUP BY props ORDER BY count(*) DESC, props LIMIT 65536;

-- `type` and `channel` are ids of event_names; `props` is NULL (none), an
-- id of event_props, or compact JSON.
CREATE TABLE events_compact (
    contact     INTEGER NOT NULL REFERENCES contacts(rowid) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    type        INTEGER NOT NULL,
    channel     INTEGER,
    event_id    TEXT,
    props,
    PRIMARY KEY (contact, at, seq)
) WITHOUT ROWID;
INSERT INTO events_compact (contact, at, seq, type, channel, event_id, props)
    SELECT e.contact, e.at, e.seq, n.id, c.id, e.event_id,
           CASE WHEN e.props = '{}' THEN NULL ELSE coalesce(p.id, e.props) END
    FROM events e JOIN event_names n ON n.name = e.type
    LEFT JOIN event_names c ON c.name = e.channel
    LEFT JOIN event_props p ON p.props = e.props
    ORDER BY e.contact, e.at, e.seq;

-- The first 8 bytes of the hash of each producer's id, and its contact.
CREATE TABLE event_ids (
    key         BLOB NOT NULL,
    contact     INTEGER NOT NULL,
    PRIMARY KEY (key, contact)
) WITHOUT ROWID;
INSERT OR IGNORE INTO event_ids (key, contact)
    SELECT substr(dedup, 1, 8), contact FROM events WHERE event_id IS NOT NULL;

-- Each contact's newest event number: the change feed.
CREATE TABLE event_feed (
    contact     INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    seq         INTEGER NOT NULL
);
INSERT INTO event_feed (contact, seq) SELECT contact, max(seq) FROM events GROUP BY contact;
CREATE INDEX event_feed_by_seq ON event_feed(seq);
INSERT INTO meta (key, value)
    VALUES ('events.last_seq', CAST((SELECT coalesce(max(seq), 0) FROM events) AS TEXT))
    ON CONFLICT(key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT);

DROP TABLE events;
ALTER TABLE events_compact RENAME TO events;

-- Events as they read, for a look by hand.
CREATE VIEW events_text AS
    SELECT e.contact, e.at, e.seq, e.event_id, coalesce(n.name, e.type) AS type,
           coalesce(c.name, e.channel) AS channel,
           CASE WHEN e.props IS NULL THEN '{}' WHEN typeof(e.props) = 'integer' THEN p.props ELSE e.props END AS props
    FROM events e LEFT JOIN event_names n ON n.id = e.type
    LEFT JOIN event_names c ON c.id = e.channel
    LEFT JOIN event_props p ON p.id = e.props;
"#,
    // 12: the call queue: hot leads in rank order, and their counts, so that
    // `calls today` reads a page of them through an index (issue #16).
    r#"
-- Contacts in a hot band ([calls] hot_bands) and callable, written by the
-- scoring pass with their score (see desk::save_queue). Derived data: the
-- rules' fingerprint names the hot bands, so a pass after this migration
-- rebuilds it. `owner` is '' for nobody.
CREATE TABLE desk_queue (
    contact      INTEGER PRIMARY KEY REFERENCES contacts(rowid) ON DELETE CASCADE,
    owner        TEXT NOT NULL,
    band         TEXT NOT NULL,
    score        INTEGER NOT NULL,
    callback_at  INTEGER,
    last_call_at INTEGER
);
CREATE INDEX desk_queue_rank ON desk_queue(band, score);
CREATE INDEX desk_queue_by_owner ON desk_queue(owner, band, score);
CREATE INDEX desk_queue_by_call ON desk_queue(last_call_at) WHERE last_call_at IS NOT NULL;

-- Its rows per owner, band and hour of the last call (floored hours since
-- the epoch; never called: the lowest hour), kept by the triggers below:
-- the hot leads not called since an instant are the hours before it plus
-- the rows of its own hour, read through desk_queue_by_call.
CREATE TABLE desk_queue_counts (
    owner       TEXT NOT NULL,
    band        TEXT NOT NULL,
    hour        INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (owner, band, hour)
) WITHOUT ROWID;
CREATE TRIGGER desk_queue_added AFTER INSERT ON desk_queue BEGIN
    INSERT INTO desk_queue_counts VALUES (NEW.owner, NEW.band,
        coalesce((NEW.last_call_at - ((NEW.last_call_at % 3600000000) + 3600000000) % 3600000000)
            / 3600000000, -9223372036854775807), 1)
    ON CONFLICT (owner, band, hour) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER desk_queue_removed AFTER DELETE ON desk_queue BEGIN
    UPDATE desk_queue_counts SET n = n - 1 WHERE owner = OLD.owner AND band = OLD.band
      AND hour = coalesce((OLD.last_call_at - ((OLD.last_call_at % 3600000000) + 3600000000) % 3600000000)
            / 3600000000, -9223372036854775807);
END;
CREATE TRIGGER desk_queue_changed AFTER UPDATE OF owner, band, last_call_at ON desk_queue
    WHEN OLD.owner IS NOT NEW.owner OR OLD.band IS NOT NEW.band
      OR OLD.last_call_at IS NOT NEW.last_call_at BEGIN
    UPDATE desk_queue_counts SET n = n - 1 WHERE owner = OLD.owner AND band = OLD.band
      AND hour = coalesce((OLD.last_call_at - ((OLD.last_call_at % 3600000000) + 3600000000) % 3600000000)
            / 3600000000, -9223372036854775807);
    INSERT INTO desk_queue_counts VALUES (NEW.owner, NEW.band,
        coalesce((NEW.last_call_at - ((NEW.last_call_at % 3600000000) + 3600000000) % 3600000000)
            / 3600000000, -9223372036854775807), 1)
    ON CONFLICT (owner, band, hour) DO UPDATE SET n = n + 1;
END;
-- The call tasks delivered, by channel: `calls today` reads those of the
-- call channels, not every send ever delivered.
CREATE INDEX outbox_sent_by_channel ON outbox(channel, updated_at) WHERE state = 'sent';

-- A contact's new owner reaches its queue row at once, scored again or not.
CREATE TRIGGER desk_queue_owner AFTER UPDATE OF record ON contacts BEGIN
    UPDATE desk_queue SET owner = coalesce(json_extract(NEW.record, '$.owner'), '')
    WHERE contact = NEW.rowid AND owner IS NOT coalesce(json_extract(NEW.record, '$.owner'), '');
END;
"#,
    // 13: one index on emails: the normalised one.
    r#"
-- The dashboard finds a contact by email through contacts_by_email_key (an
-- email in any case finds it); the index on the raw email was a second
-- random insert per contact written, for nothing.
DROP INDEX contacts_by_email;
"#,
    // 14: `calls today` reads the due call-backs from their index alone.
    r#"
-- A desk row carries its contact's id, its owner kept current like the
-- call queue's, and, with a call-back, the band and score written with it:
-- `calls today` ranks tens of thousands of due call-backs from this index
-- without reading each contact's record and score.
ALTER TABLE contact_desk ADD COLUMN id TEXT;
ALTER TABLE contact_desk ADD COLUMN band TEXT;
ALTER TABLE contact_desk ADD COLUMN score INTEGER;
UPDATE contact_desk SET (id, owner) = (SELECT c.id, json_extract(c.record, '$.owner')
    FROM contacts c WHERE c.rowid = contact_desk.contact);
UPDATE contact_desk SET (band, score) = (SELECT s.band, s.score
    FROM scores s WHERE s.contact = contact_desk.contact)
WHERE callback_at IS NOT NULL;
DROP INDEX contact_desk_callbacks;
CREATE INDEX contact_desk_callbacks
    ON contact_desk(callback_at, status, do_not_call, owner, id, band, score)
    WHERE callback_at IS NOT NULL;
DROP TRIGGER desk_queue_owner;
CREATE TRIGGER desk_queue_owner AFTER UPDATE OF record ON contacts BEGIN
    UPDATE desk_queue SET owner = coalesce(json_extract(NEW.record, '$.owner'), '')
    WHERE contact = NEW.rowid AND owner IS NOT coalesce(json_extract(NEW.record, '$.owner'), '');
    UPDATE contact_desk SET owner = json_extract(NEW.record, '$.owner')
    WHERE contact = NEW.rowid AND owner IS NOT json_extract(NEW.record, '$.owner');
END;
"#,
    // 15: a memo says when its contact had no event after it.
    r#"
-- The contact's newest event number (event_feed; 0 for none) when the memo
-- was written and no event of the contact was after `upto`; NULL when one
-- was. While the feed still says so, a planning pass trusting the memo has
-- no event of the contact to read (see sqlite::plan).
ALTER TABLE plan_memo ADD COLUMN quiet INTEGER;
"#,
    // 16: the dispatcher's batches add their counts as sums.
    r#"
-- A row here, written and removed inside one write transaction, tells the
-- five triggers below that the transaction adds their changes itself,
-- summed over its batch (sqlite::sums): a claim or a settlement of 500
-- rows runs a few statements instead of a trigger program per row. No
-- other transaction, process or cascade ever sees the row, so for them
-- the triggers keep the counts as before.
CREATE TABLE counts_summed (summed INTEGER);
DROP TRIGGER ui_outbox_update;
CREATE TRIGGER ui_outbox_update AFTER UPDATE OF first_due, followup, kind, channel, state ON outbox
    WHEN (OLD.first_due / 86400000000 <> NEW.first_due / 86400000000 OR OLD.followup <> NEW.followup
      OR OLD.kind <> NEW.kind OR OLD.channel <> NEW.channel OR OLD.state <> NEW.state)
      AND NOT EXISTS (SELECT 1 FROM counts_summed) BEGIN
    UPDATE ui_outbox_counts SET n = n - 1
        WHERE day = OLD.first_due / 86400000000 AND followup = OLD.followup AND kind = OLD.kind
          AND channel = OLD.channel AND state = OLD.state;
    INSERT INTO ui_outbox_counts
        VALUES (NEW.first_due / 86400000000, NEW.followup, NEW.kind, NEW.channel, NEW.state, 1)
        ON CONFLICT (day, followup, kind, channel, state) DO UPDATE SET n = n + 1;
END;
DROP TRIGGER ui_decisions_insert;
CREATE TRIGGER ui_decisions_insert AFTER INSERT ON decision_log
    WHEN NOT EXISTS (SELECT 1 FROM counts_summed) BEGIN
    INSERT INTO ui_decisions VALUES (NEW.at / 86400000000, NEW.decision,
        coalesce(json_extract(NEW.reasons, '$[0].rule'), json_extract(NEW.reasons, '$.reasons[0].rule'),
                 json_extract(NEW.reasons, '$[0]'), ''), 1)
        ON CONFLICT (day, decision, rule) DO UPDATE SET n = n + 1;
END;
DROP TRIGGER outbox_sent_update;
CREATE TRIGGER outbox_sent_update AFTER UPDATE OF state ON outbox
WHEN new.state = 'sent' AND old.state <> 'sent' AND NOT EXISTS (SELECT 1 FROM counts_summed) BEGIN
    INSERT INTO campaign_contacts (contact, campaign, sends) VALUES (new.contact, new.followup, 1)
    ON CONFLICT(contact, campaign) DO UPDATE SET sends = sends + 1;
END;
DROP TRIGGER campaign_contacts_added;
CREATE TRIGGER campaign_contacts_added AFTER INSERT ON campaign_contacts
WHEN NOT EXISTS (SELECT 1 FROM counts_summed) BEGIN
    INSERT INTO campaign_stats (campaign) VALUES (new.campaign) ON CONFLICT(campaign) DO NOTHING;
    UPDATE campaign_stats SET sent = sent + new.sends, contacts = contacts + 1,
        opened = opened + new.opened, clicked = clicked + new.clicked,
        unsubscribed = unsubscribed + new.unsubscribed,
        clicked_in = clicked_in + (new.clicked AND new.in_target),
        band_up = band_up + new.band_up, meeting = meeting + new.meeting,
        purchase = purchase + new.purchase,
        converted = converted + (new.band_up OR new.meeting OR new.purchase)
    WHERE campaign = new.campaign;
END;
DROP TRIGGER campaign_contacts_changed;
CREATE TRIGGER campaign_contacts_changed AFTER UPDATE ON campaign_contacts
WHEN NOT EXISTS (SELECT 1 FROM counts_summed) BEGIN
    UPDATE campaign_stats SET sent = sent + new.sends - old.sends,
        opened = opened + new.opened - old.opened, clicked = clicked + new.clicked - old.clicked,
        unsubscribed = unsubscribed + new.unsubscribed - old.unsubscribed,
        clicked_in = clicked_in + (new.clicked AND new.in_target) - (old.clicked AND old.in_target),
        band_up = band_up + new.band_up - old.band_up, meeting = meeting + new.meeting - old.meeting,
        purchase = purchase + new.purchase - old.purchase,
        converted = converted + (new.band_up OR new.meeting OR new.purchase)
            - (old.band_up OR old.meeting OR old.purchase)
    WHERE campaign = new.campaign;
END;
"#,
    // 17: no index on the outbox's state alone.
    r#"
-- Every claim and settlement changed it: two entries moved per send.
-- Pending rows are found through outbox_ready (a query names its
-- predicate, `state IN (...)`, to use it), sent ones through their own
-- partial indexes.
DROP INDEX outbox_by_state;
"#,
    // 18: outbox_ready's predicate as comparisons.
    r#"
-- SQLite tests a list of more than two constants (`state IN (...)`) by
-- building a temporary B-tree of them each time a statement runs: every
-- write of an outbox row (a claim's, a plan's insert) built two. Queries
-- name this predicate, written the same way, to use the index.
DROP INDEX outbox_ready;
CREATE INDEX outbox_ready ON outbox(due_at)
    WHERE (state = 'planned' OR state = 'deferred' OR state = 'retrying' OR state = 'claimed');
"#,
    // 19: the writers of outbox rows and decisions add their counts; the
    // ready index in the claim's order.
    r#"
-- Every writer of outbox rows and decisions (claims, settlements, planning
-- passes, enqueues, releases) adds the dashboard's counts and the
-- campaigns' sends as sums over its transaction (sqlite::sums). A trigger
-- costs each row a program frame even when its WHEN turns it off: five
-- entered for every send. Deletes (retention, erasure) keep theirs.
DROP TRIGGER ui_outbox_insert;
DROP TRIGGER ui_outbox_update;
DROP TRIGGER outbox_sent_insert;
DROP TRIGGER outbox_sent_update;
DROP TRIGGER ui_decisions_insert;
-- The claim takes the due rows by due instant, then highest priority, then
-- oldest row: the index now holds that order (seq being the rowid at the
-- end of each entry), so a claim reads only the entries it takes; on the
-- due instant alone, it read and sorted every row due at the same instant
-- (a broadcast's) for each batch.
DROP INDEX outbox_ready;
CREATE INDEX outbox_ready ON outbox(due_at, priority DESC)
    WHERE (state = 'planned' OR state = 'deferred' OR state = 'retrying' OR state = 'claimed');
"#,
    // 20: the writer of scores adds the score buckets and band moves.
    r#"
-- A rescoring pass adds the dashboard's score buckets and band crossings as
-- sums over its transaction (sqlite::sums), as the outbox's writers do since
-- migration 19: the update trigger was entered for every score written,
-- changed or not. Deletes (erasure, retention) keep theirs.
DROP TRIGGER ui_scores_insert;
DROP TRIGGER ui_scores_update;
DROP TRIGGER ui_moves_insert;
"#,
];

/// Migration 9 here and 3 on PostgreSQL (the same statements): the indexes
/// a prune walks, oldest first. Delivered rows planning keeps (nurture)
/// are left out of the outbox's, so that a prune never walks over them.
pub(crate) const RETENTION_INDEXES: &str = "
CREATE INDEX outbox_sent_at ON outbox(updated_at) WHERE state = 'sent' AND kind <> 'systematic';
CREATE INDEX decision_log_by_at ON decision_log(at);
CREATE INDEX score_snapshots_by_at ON score_snapshots(at);
";
