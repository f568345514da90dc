-- Every append tells the other processes on this database at once
-- (`LISTEN crm_log`), so their live feeds and read models need not poll:
-- the payload is the schema and the last position the statement inserted.
-- NOTIFY is delivered at COMMIT, and not at all after a rollback.
CREATE OR REPLACE FUNCTION crm_notify_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crm_log', current_schema() || ' ' || (SELECT max(position) FROM inserted));
    RETURN NULL;
END $$;

CREATE TRIGGER crm_notify_append AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION crm_notify_append();
