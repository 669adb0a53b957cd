//! Seeding: users (upserted by a first `GET /users/me`), rooms (`POST /chats/`
//! by the room's owner) and memberships (`POST /chats/{id}/members` by the owner).
//! The result is a [`Plan`] that can be written to a file and shared by several
//! cooperating processes (`echo-load seed` then `echo-load ws --plan FILE`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::common::{ErrorSamples, Minter, Target};
use crate::http::Api;
use crate::progress::{with_ticker, Progress};

pub const PLAN_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PlanUser {
    pub id: Uuid,
    pub email: String,
    /// Index into `rooms`.
    pub room: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PlanRoom {
    pub chat_id: String,
    /// Index into `users` of the owner (also `members[0]`).
    pub owner: usize,
    /// Indices into `users`, owner first.
    pub members: Vec<usize>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Plan {
    pub version: u32,
    pub url: String,
    pub created_at: String,
    pub room_size: usize,
    pub users: Vec<PlanUser>,
    pub rooms: Vec<PlanRoom>,
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading plan {}", path.display()))?;
        let p: Plan = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an echo-load plan", path.display()))?;
        if p.version != PLAN_VERSION {
            bail!(
                "plan version {} is not supported (want {PLAN_VERSION})",
                p.version
            );
        }
        for (i, u) in p.users.iter().enumerate() {
            if u.room >= p.rooms.len() {
                bail!("plan user {i} points at a missing room {}", u.room);
            }
        }
        Ok(p)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing plan {}", path.display()))
    }

    /// Position of a user inside its room (0 = owner).
    pub fn position_in_room(&self, user: usize) -> usize {
        let room = &self.rooms[self.users[user].room];
        room.members.iter().position(|&m| m == user).unwrap_or(0)
    }
}

/// Create `sessions` users in rooms of `room_size` members on the server.
pub async fn seed(
    target: &Target,
    minter: &Minter,
    sessions: usize,
    room_size: usize,
    concurrency: usize,
    progress: &mut Progress,
) -> Result<Plan> {
    if sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if room_size == 0 {
        bail!("--room-size must be at least 1");
    }
    let concurrency = concurrency.max(1);
    let seeder = Seeder {
        api: Api::new(target, concurrency),
        minter,
        concurrency,
        tag: Uuid::new_v4().simple().to_string()[..8].to_string(),
    };
    let users = seeder.new_users(sessions, room_size);
    seeder.upsert_users(&users, progress).await?;
    let rooms = seeder.create_rooms(&users, room_size, progress).await?;
    seeder.add_members(&users, &rooms, progress).await?;
    Ok(Plan {
        version: PLAN_VERSION,
        url: target.base.clone(),
        created_at: crate::common::rfc3339_now(),
        room_size,
        users,
        rooms,
    })
}

/// What every seeding step uses: the API client, the token minter, how many requests run at
/// once and the run's tag (in every email and room title).
struct Seeder<'a> {
    api: Api,
    minter: &'a Minter,
    concurrency: usize,
    tag: String,
}

/// The outcome of one seeding step's requests, counted as they finish.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    failed: AtomicU64,
    errors: ErrorSamples,
}

impl Tally {
    /// Counts one request's result; the value when it succeeded (its error kept as a sample
    /// when it failed).
    fn count<T>(&self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.done.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                self.errors.add(format!("{e:#}"));
                self.failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Fails the seeding when any request of the step (`what`) failed, quoting the first errors.
    fn check(&self, what: &str) -> Result<()> {
        let f = self.failed.load(Ordering::Relaxed);
        if f > 0 {
            let sample = self.errors.snapshot();
            bail!(
                "seeding failed: {f} {what} failed; first errors:\n  {}",
                sample.join("\n  ")
            );
        }
        Ok(())
    }
}

impl Seeder<'_> {
    /// `sessions` new users, `room_size` to a room in order.
    fn new_users(&self, sessions: usize, room_size: usize) -> Vec<PlanUser> {
        (0..sessions)
            .map(|i| {
                let id = Uuid::new_v4();
                PlanUser {
                    email: format!("load-{}-{i}@load.echo.test", self.tag),
                    id,
                    room: i / room_size,
                }
            })
            .collect()
    }

    /// Step 1, users: the first authenticated request upserts the user row.
    async fn upsert_users(&self, users: &[PlanUser], progress: &mut Progress) -> Result<()> {
        let tally = Tally::default();
        progress.phase("users", users.len() as u64, false);
        let fut = futures_util::stream::iter(users.iter())
            .map(|u| {
                let tally = &tally;
                async move {
                    let r = async {
                        let tok = self.minter.token(&u.id, &u.email)?;
                        self.api
                            .call(Method::GET, "/users/me", Some(&tok), None, &[200])
                            .await
                    }
                    .await;
                    tally.count(r);
                }
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<()>>();
        with_ticker(progress, fut, || {
            let d = tally.done.load(Ordering::Relaxed);
            let f = tally.failed.load(Ordering::Relaxed);
            (d + f, format!("upserted {d} failed {f}"))
        })
        .await;
        tally.check("user upserts")
    }

    /// Step 2, rooms, each created by its owner (first member).
    async fn create_rooms(
        &self,
        users: &[PlanUser],
        room_size: usize,
        progress: &mut Progress,
    ) -> Result<Vec<PlanRoom>> {
        let sessions = users.len();
        let n_rooms = sessions.div_ceil(room_size);
        let tally = Tally::default();
        progress.phase("rooms", n_rooms as u64, false);
        let fut = futures_util::stream::iter(0..n_rooms)
            .map(|r| {
                let tally = &tally;
                let owner = &users[r * room_size];
                async move { tally.count(self.create_room(owner, r).await) }
            })
            .buffered(self.concurrency)
            .collect::<Vec<Option<String>>>();
        let ids = with_ticker(progress, fut, || {
            let d = tally.done.load(Ordering::Relaxed);
            (d, format!("created {d}/{n_rooms}"))
        })
        .await;
        tally.check("room creations")?;
        Ok(ids
            .into_iter()
            .enumerate()
            .map(|(r, id)| {
                let lo = r * room_size;
                let hi = ((r + 1) * room_size).min(sessions);
                PlanRoom {
                    chat_id: id.unwrap_or_default(),
                    owner: lo,
                    members: (lo..hi).collect(),
                }
            })
            .collect())
    }

    /// Room `r`, created by `owner`; its chat id.
    async fn create_room(&self, owner: &PlanUser, r: usize) -> Result<String> {
        let tok = self.minter.token(&owner.id, &owner.email)?;
        let body = json!({ "title": format!("load room {r} ({})", self.tag) });
        let (_, v) = self
            .api
            .call(
                Method::POST,
                "/chats/",
                Some(&tok),
                Some(&body),
                &[200, 201],
            )
            .await?;
        let id = v
            .get("id")
            .and_then(|x| x.as_str())
            .context("POST /chats/ response has no string `id`")?
            .to_string();
        Ok(id)
    }

    /// Step 3, memberships, added by each room's owner.
    async fn add_members(
        &self,
        users: &[PlanUser],
        rooms: &[PlanRoom],
        progress: &mut Progress,
    ) -> Result<()> {
        let adds: Vec<(usize, usize)> = rooms
            .iter()
            .enumerate()
            .flat_map(|(r, room)| room.members.iter().skip(1).map(move |&m| (r, m)))
            .collect();
        let tally = Tally::default();
        let n_adds = adds.len();
        progress.phase("members", n_adds as u64, false);
        let fut = futures_util::stream::iter(adds.iter())
            .map(|&(r, m)| {
                let tally = &tally;
                let room = &rooms[r];
                let owner = &users[room.owner];
                let member = &users[m];
                async move {
                    let r = async {
                        let tok = self.minter.token(&owner.id, &owner.email)?;
                        let body = json!({ "user_id": member.id });
                        let path = format!("/chats/{}/members", room.chat_id);
                        // 409: already a member (a retried request that had succeeded).
                        self.api
                            .call(
                                Method::POST,
                                &path,
                                Some(&tok),
                                Some(&body),
                                &[200, 201, 409],
                            )
                            .await
                    }
                    .await;
                    tally.count(r);
                }
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<()>>();
        with_ticker(progress, fut, || {
            let d = tally.done.load(Ordering::Relaxed);
            (d, format!("added {d}/{n_adds}"))
        })
        .await;
        tally.check("member additions")
    }
}
