-- SIP telephony: each user's phone line. The Request-URI user of an incoming INVITE selects the avatar by the
-- account's username (its handle) or by the numeric extension set here. allowed_callers is the caller-ID
-- allow-list (From / P-Asserted-Identity user part, e.g. '+4930123456' or '1001'); an empty list admits any
-- caller the trunk admitted, so a user opts in to "only my phones may reach my avatar". The list is personal
-- data (the numbers of the people in a user's life): it is sealed with the user's data key (a JSON list; NULL
-- is the empty list). The extension stays in clear: it is the lookup key of incoming calls.
CREATE TABLE sip_lines (
    user_id         uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    extension       text UNIQUE CHECK (extension ~ '^[0-9]{2,15}$'),
    allowed_callers bytea,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
