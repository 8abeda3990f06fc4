//! Diesel's view of the tables in `migrations/`. A test compares it with the
//! migrated database on both backends, so the two cannot drift apart.

diesel::table! {
    accounts (account_key) {
        account_key -> Text,
        alias -> Text,
        created_at -> BigInt,
        disabled_at -> Nullable<BigInt>,
        retention_keep_ms -> Nullable<BigInt>,
        device_list_version -> BigInt,
        device_list -> Binary,
        device_list_signature -> Binary,
    }
}

diesel::table! {
    devices (id) {
        id -> BigInt,
        account_key -> Text,
        device_id -> Text,
        sign_key -> Binary,
        box_key -> Binary,
        certificate -> Binary,
        certificate_signature -> Binary,
        created_at -> BigInt,
        last_seen_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        pending_messages -> BigInt,
        pending_bytes -> BigInt,
    }
}

diesel::table! {
    auth_challenges (nonce) {
        nonce -> Binary,
        expires_at -> BigInt,
    }
}

diesel::table! {
    auth_tokens (token_hash) {
        token_hash -> Binary,
        device_row -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    invites (invite_id) {
        invite_id -> Text,
        code_hash -> Binary,
        max_uses -> Integer,
        uses -> Integer,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    device_links (link_id) {
        link_id -> Text,
        request -> Binary,
        response -> Nullable<Binary>,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        origin -> Text,
        message_id -> Text,
        sender_account -> Nullable<Text>,
        sender_device -> Nullable<Text>,
        request_digest -> Binary,
        body -> Binary,
        delivery_mode -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    deliveries (id) {
        id -> BigInt,
        message_row -> BigInt,
        device_row -> BigInt,
        recipient_account -> Text,
        key_wrap -> Binary,
        body_bytes -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    delivery_receipts (sender_account, message_id, recipient) {
        sender_account -> Text,
        message_id -> Text,
        recipient -> Text,
        state -> Text,
        detail -> Nullable<Text>,
        updated_at -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        message_row -> BigInt,
        destination -> Text,
        recipients -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    outbox_txns (txn_id) {
        txn_id -> Text,
        destination -> Text,
        outbox_rows -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    destinations (server_name) {
        server_name -> Text,
        failures -> Integer,
        next_attempt_at -> BigInt,
        last_error -> Nullable<Text>,
        last_success_at -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        last_failure_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    inbound_txns (origin, txn_id) {
        origin -> Text,
        txn_id -> Text,
        request_digest -> Binary,
        response -> Text,
        received_at -> BigInt,
    }
}

diesel::table! {
    federation_nonces (origin, nonce) {
        origin -> Text,
        nonce -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    server_keys (key_id) {
        key_id -> Text,
        public_key -> Binary,
        secret_key -> Binary,
        is_current -> Bool,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    peer_keys (server_name, key_id) {
        server_name -> Text,
        key_id -> Text,
        public_key -> Binary,
        valid_until -> BigInt,
        fetched_at -> BigInt,
    }
}

diesel::table! {
    resolution_cache (server_name) {
        server_name -> Text,
        target -> Nullable<Text>,
        error -> Nullable<Text>,
        resolved_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    remote_identities (address) {
        address -> Text,
        account_key -> Text,
        document -> Text,
        pinned_account_key -> Text,
        key_changed_at -> Nullable<BigInt>,
        fetched_at -> BigInt,
        expires_at -> BigInt,
        pinned_version -> BigInt,
    }
}

diesel::table! {
    federation_rules (server_name) {
        server_name -> Text,
        rule -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    send_idempotency (sender_account, message_id) {
        sender_account -> Text,
        message_id -> Text,
        request_digest -> Binary,
        response -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    auth_revocations (id) {
        id -> Integer,
        epoch -> BigInt,
    }
}

diesel::joinable!(devices -> accounts (account_key));
diesel::joinable!(auth_tokens -> devices (device_row));
diesel::joinable!(deliveries -> messages (message_row));
diesel::joinable!(deliveries -> devices (device_row));
diesel::joinable!(push_subscriptions -> devices (device_row));
diesel::joinable!(outbox -> messages (message_row));

diesel::table! {
    departed_accounts (alias) {
        alias -> Text,
        account_key -> Text,
        departed_at -> BigInt,
        signature -> Text,
    }
}

diesel::table! {
    status_feed (id) {
        id -> BigInt,
        xid -> BigInt,
        sender_account -> Text,
        message_id -> Text,
        recipient -> Text,
        state -> Text,
        detail -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    outbound_recalls (destination, message_id) {
        destination -> Text,
        message_id -> Text,
        sender_account -> Text,
        recipients -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    push_subscriptions (device_row) {
        device_row -> BigInt,
        endpoint -> Text,
        p256dh -> Binary,
        auth -> Binary,
        created_at -> BigInt,
        due_at -> Nullable<BigInt>,
        attempts -> Integer,
        last_push_at -> Nullable<BigInt>,
        pushed_cursor -> Nullable<BigInt>,
        lease_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    push_keys (id) {
        id -> Integer,
        secret_key -> Binary,
        public_key -> Binary,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    push_subscriptions,
    push_keys,
    outbound_recalls,
    departed_accounts,
    status_feed,
    devices,
    auth_challenges,
    auth_tokens,
    invites,
    device_links,
    messages,
    deliveries,
    delivery_receipts,
    outbox,
    outbox_txns,
    destinations,
    inbound_txns,
    federation_nonces,
    server_keys,
    peer_keys,
    resolution_cache,
    remote_identities,
    federation_rules,
    send_idempotency,
    auth_revocations,
);
