-- hoop reviews, shared by every gateway using this database.
-- The whole review is kept as JSON; the columns beside it exist to find
-- reviews (by status, by grant) without reading every document.
CREATE TABLE IF NOT EXISTS hoop_reviews (
    id              text PRIMARY KEY,
    status          text NOT NULL,
    subject         text NOT NULL,
    role            text NOT NULL,
    rule            text NOT NULL,
    sql_fingerprint text NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    grant_until     timestamptz,
    review          jsonb NOT NULL
);

CREATE INDEX IF NOT EXISTS hoop_reviews_by_status
    ON hoop_reviews (status, created_at DESC);

CREATE INDEX IF NOT EXISTS hoop_reviews_grants
    ON hoop_reviews (subject, rule, sql_fingerprint)
    WHERE grant_until IS NOT NULL;
