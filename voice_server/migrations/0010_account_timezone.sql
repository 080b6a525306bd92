-- The user's timezone belongs to the account (voice_server/accounts.py): the bond's streaks, the proactive
-- schedule and anything else that needs the user's local date read it from users, not from another
-- feature's settings. Users who never chose one keep the old default, UTC.
ALTER TABLE users ADD COLUMN timezone text NOT NULL DEFAULT 'UTC';

UPDATE users u SET timezone = s.timezone FROM proactive_settings s WHERE s.user_id = u.id;

-- proactive_settings keeps only proactive's own settings; the data export writes the timezone in account.json.
ALTER TABLE proactive_settings DROP COLUMN timezone;
