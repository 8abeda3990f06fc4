-- Databases for the two Homing servers of docker-compose.yml.
--
-- The postgres image runs this file once, as the superuser, when it
-- initialises an empty data volume (postgres-data). It is not run again on
-- later starts: to change what it creates, remove the volume
-- (`docker compose down -v`, which deletes every message) or apply the
-- statements by hand.
--
-- The password is not in this file: psql reads it from HOMING_DB_PASSWORD,
-- which docker-compose.yml passes to the postgres container. Keep it to
-- URL-safe characters (e.g. `openssl rand -hex 24`): the instances put it in
-- a postgres:// URL.
--
-- One role owns both databases to keep the demonstration small. Two
-- servers run by different people, or with different trust, should each
-- have their own role: a database holds its server's signing key (table
-- server_keys).

\set ON_ERROR_STOP on
\getenv homing_password HOMING_DB_PASSWORD

\if :{?homing_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'HOMING_DB_PASSWORD is not set in the postgres container'; END $$;
\endif

CREATE ROLE homing LOGIN PASSWORD :'homing_password';

-- homingd creates its tables itself (migrations run at every start); as the
-- owner of each database the role may do so in the public schema.
CREATE DATABASE homing_a OWNER homing ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE homing_b OWNER homing ENCODING 'UTF8' TEMPLATE template0;

-- Nobody else may connect to them.
REVOKE ALL ON DATABASE homing_a FROM PUBLIC;
REVOKE ALL ON DATABASE homing_b FROM PUBLIC;
