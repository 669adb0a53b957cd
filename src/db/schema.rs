//! Table definitions, written once and instantiated per backend with that backend's column
//! types (see `sql_types`). Query code picks the module through `db::run!`.
//!
//! Diesel's `table!` generates a module per table and one per column; they have no docs of
//! their own.
#![allow(missing_docs)]

macro_rules! echo_tables {
    ($($types:ident)::+) => {
        diesel::table! {
            use diesel::sql_types::{BigInt, Bool, Nullable, Text};
            use $($types)::+::*;

            /// Users, upserted from JWT claims on first use.
            users (id) {
                id -> Uuid,
                username -> Text,
                email -> Nullable<Text>,
                full_name -> Nullable<Text>,
                is_active -> Bool,
                created_at -> Instant,
                updated_at -> Instant,
            }
        }

        diesel::table! {
            use diesel::sql_types::{BigInt, Nullable, Text};
            use $($types)::+::*;

            /// Chats; `last_seq` is the seq of the newest message.
            chats (id) {
                id -> Uuid,
                owner_id -> Uuid,
                title -> Nullable<Text>,
                last_seq -> BigInt,
                created_at -> Instant,
                updated_at -> Instant,
            }
        }

        diesel::table! {
            use diesel::sql_types::Text;
            use $($types)::+::*;

            /// Who may read and post in a chat.
            chat_members (chat_id, user_id) {
                chat_id -> Uuid,
                user_id -> Uuid,
                role -> Text,
                joined_at -> Instant,
            }
        }

        diesel::table! {
            use diesel::sql_types::{BigInt, Bool, Nullable, Text};
            use $($types)::+::*;

            /// Chat messages, gap-free `seq` per chat.
            messages (id) {
                id -> Uuid,
                chat_id -> Uuid,
                seq -> BigInt,
                user_id -> Nullable<Uuid>,
                role -> Text,
                is_from_ai -> Bool,
                content -> Text,
                client_msg_id -> Nullable<Uuid>,
                finish_reason -> Nullable<Text>,
                created_at -> Instant,
            }
        }

        diesel::table! {
            use diesel::sql_types::{BigInt, Bool, Integer, Text};
            use $($types)::+::*;

            /// Uploaded videos.
            videos (id) {
                id -> Integer,
                uploader_user_id -> Uuid,
                original_filename -> Text,
                storage_path -> Text,
                content_type -> Text,
                size_bytes -> BigInt,
                upload_completed -> Bool,
                created_at -> Instant,
                updated_at -> Instant,
            }
        }

        diesel::table! {
            use diesel::sql_types::{Integer, Nullable, Text};
            use $($types)::+::*;

            /// Processing jobs of videos.
            video_jobs (id) {
                id -> Integer,
                video_id -> Integer,
                user_id -> Uuid,
                status -> Text,
                progress -> Integer,
                stage -> Nullable<Text>,
                processing_stages -> Nullable<Jsonb>,
                error_message -> Nullable<Text>,
                created_at -> Instant,
                updated_at -> Instant,
                attempts -> Integer,
                lease_owner -> Nullable<Text>,
                lease_expires_at -> Nullable<Instant>,
                stage_results -> Nullable<Jsonb>,
            }
        }

        diesel::table! {
            use diesel::sql_types::{Double, Integer, Nullable, Text};
            use $($types)::+::*;

            /// What a job extracted and generated for a video.
            video_metadata (id) {
                id -> Integer,
                video_id -> Integer,
                job_id -> Integer,
                title -> Nullable<Text>,
                description -> Nullable<Text>,
                tags -> Nullable<TextArray>,
                transcript_text -> Nullable<Text>,
                transcript_path -> Nullable<Text>,
                subtitle_paths -> Nullable<Jsonb>,
                thumbnail_path -> Nullable<Text>,
                extracted_video_duration_seconds -> Nullable<Double>,
                extracted_video_resolution -> Nullable<Text>,
                extracted_video_format -> Nullable<Text>,
                show_notes_text -> Nullable<Text>,
                created_at -> Instant,
                updated_at -> Instant,
            }
        }

        diesel::joinable!(chat_members -> chats (chat_id));
        diesel::joinable!(messages -> chats (chat_id));
        diesel::joinable!(video_jobs -> videos (video_id));
        diesel::allow_tables_to_appear_in_same_query!(
            users,
            chats,
            chat_members,
            messages,
            videos,
            video_jobs,
            video_metadata,
        );
    };
}

/// Tables with Postgres column types.
pub mod pg {
    echo_tables!(crate::db::sql_types::pg);
}

/// Tables with SQLite column types.
pub mod sqlite {
    echo_tables!(crate::db::sql_types::sqlite);
}
