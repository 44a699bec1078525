-- Registry and dead letters: the same on plain PostgreSQL and on TimescaleDB.

CREATE TABLE tenants (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text NOT NULL UNIQUE CHECK (code <> ''),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateways (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      bigint NOT NULL REFERENCES tenants (id),
    mac            text NOT NULL UNIQUE CHECK (mac ~ '^([0-9a-f]{2}:){5}[0-9a-f]{2}$'),
    code           text NOT NULL UNIQUE CHECK (code <> ''),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    revoked_at     timestamptz,
    payload_format text NOT NULL DEFAULT 'v1' CHECK (payload_format IN ('v1', 'legacy')),
    last_seen      timestamptz,
    online         boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX gateways_tenant_idx ON gateways (tenant_id);

CREATE TABLE devices (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id bigint NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    code       text NOT NULL CHECK (code ~ '^[A-Za-z0-9_.-]{1,32}$'),
    slave_id   smallint NOT NULL CHECK (slave_id BETWEEN 1 AND 247),
    register   integer NOT NULL CHECK (register BETWEEN 0 AND 65535),
    data_type  text NOT NULL DEFAULT 'uint16'
               CHECK (data_type IN ('uint16', 'int16', 'uint32', 'int32', 'float32')),
    word_order text NOT NULL DEFAULT 'big' CHECK (word_order IN ('big', 'little')),
    scale      double precision NOT NULL DEFAULT 0.01,
    unit       text NOT NULL,
    kind       text NOT NULL DEFAULT 'other' CHECK (kind IN ('energy', 'water', 'temperature', 'other')),
    UNIQUE (gateway_id, code),
    UNIQUE (gateway_id, slave_id, register)
);

-- Every message the consumer could not store, with the reason. The digest (sha256 of topic, payload and
-- reason) makes a broker redelivery of the same rejected message land once.
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    client_id   text,
    digest      bytea NOT NULL UNIQUE
);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

-- The ingest cache reloads on this notification instead of querying per message. Liveness updates
-- (last_seen, online) are excluded: they happen on every batch and change nothing the cache holds.
CREATE FUNCTION tds_registry_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tds_registry', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tds_registry_notify();
CREATE TRIGGER gateways_notify_write AFTER INSERT OR DELETE OR TRUNCATE ON gateways
    FOR EACH STATEMENT EXECUTE FUNCTION tds_registry_notify();
CREATE TRIGGER gateways_notify_update
    AFTER UPDATE OF tenant_id, mac, code, status, revoked_at, payload_format ON gateways
    FOR EACH STATEMENT EXECUTE FUNCTION tds_registry_notify();
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION tds_registry_notify();
