//! Code a statement runs without naming it, and what that means for
//! running a statement while its record is written (see
//! [`crate::relay::gate::RunsEarly`]).
//!
//! A plain read names no function, yet the server may still call one for
//! it: the function behind a user-defined operator or cast, a type's
//! output function, a view's or a row security policy's expression, a
//! domain's check, a function of one row called as `t.f` (attribute
//! notation), a partition key; a plain write also fires triggers and
//! evaluates column defaults and index expressions. A statement only runs early when nothing of it outlasts its
//! transaction unless that commits; a function called that way could write
//! a table, move a sequence, take an advisory lock or call out of the
//! database, and an autocommit read would commit it even when its record
//! then fails. So a session runs nothing early unless its database holds
//! no such code: the gateway asks at login (`hidden_code.sql`, on the
//! session's own connection, as its role), and stops running statements
//! early in every session of that database once any of them sends a
//! statement that may create such code (DDL, `DO`, `CALL`, any named
//! function call), until those sessions log in again and the catalog is
//! read anew; sessions that log in before that statement's transaction
//! has ended count as having logged in before it.
//!
//! A statement that calls functions by name is weighed with what the same
//! reading says of those names: a call can only be of a built-in function
//! that is neither volatile nor runs SQL text it is given (`count`,
//! `lower`, `now`) when its name is a built-in function's and no other
//! function of that name exists; such a call creates no code and changes
//! nothing, so the statement is weighed as if it made none (see
//! [`crate::relay::gate::StatementInfo::weigh_calls`]). A function created
//! later through this gateway is a change, and the session then runs
//! nothing early anyway; one created outside it (by a DBA directly) has a
//! name the reading did not list as built-in, so its calls are weighed as
//! a user-written function's all the same.
//!
//! What this does not see: a change made outside this gateway after a
//! session's login (by a DBA directly, or through another gateway) until
//! the session logs in again. For calls, that is only a function created
//! so under a built-in function's name (an overload such as
//! `public.lower(int)`), weighed as the built-in one until then.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One row: whether the database holds such code, then the names of
/// functions that calls may reach (see [`Catalog`]).
pub(crate) const QUERY: &str = include_str!("hidden_code.sql");

/// What a catalog reading found.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// Code statements may run without naming it.
    pub found: bool,
    /// Names (lowercased) of functions that can create code: any not built
    /// in, a procedure, a built-in one that runs SQL text it is given
    /// (`None`: not known, as where the answer was not in a form the
    /// gateway reads).
    pub creating_code: Option<HashSet<String>>,
    /// Names (lowercased) of volatile built-in functions (`None`: not
    /// known).
    pub volatile: Option<HashSet<String>>,
    /// Names (lowercased) of every built-in function (`None`: not known).
    pub builtin: Option<HashSet<String>>,
}

impl Catalog {
    /// Whether none of `names` (as a statement calls them: lowercased,
    /// maybe qualified) can be one of `set`'s, under its full name or its
    /// last part. Built-in functions have ASCII names, so a name that is
    /// not ASCII is never taken for one (whatever lowercasing made of it).
    fn none_in(set: Option<&HashSet<String>>, names: &[String]) -> bool {
        set.is_some_and(|set| {
            names.iter().all(|name| {
                let last = name.rsplit('.').next().unwrap_or(name);
                name.is_ascii() && !set.contains(name.as_str()) && !set.contains(last)
            })
        })
    }

    /// Whether each of `names` (as a statement calls them) is a built-in
    /// function's name, unqualified or in `pg_catalog` (a call naming
    /// another schema cannot reach one there), and ASCII as built-in names
    /// are. A name that is none, such as that of a function created after
    /// the reading, may only be a user-written function's.
    fn all_builtin(&self, names: &[String]) -> bool {
        self.builtin.as_ref().is_some_and(|set| {
            names.iter().all(|name| {
                let function = name.strip_prefix("pg_catalog.").unwrap_or(name);
                name.is_ascii() && !function.contains('.') && set.contains(function)
            })
        })
    }
}

/// How long a catalog reading serves the logins that follow it, while no
/// session of this gateway sent a change meanwhile. Reading it costs a
/// login a few ms (`pgbench -C -S`: 4.7–5.2 ms per connection without
/// it, 8.6 ms with it every time); a change made outside the gateway
/// reaches the logins of up to this much later.
const READING_SERVES: Duration = Duration::from_secs(1);

/// One database, as this gateway's sessions know it.
#[derive(Debug, Default)]
struct Database {
    /// Statements that may have created such code, sent so far by this
    /// gateway's sessions (counted twice each: when sent, and when their
    /// transaction ended, so a login whose catalog read raced the change
    /// cannot miss it).
    changes: AtomicU64,
    /// Sessions whose change has been sent and whose transaction has not
    /// ended: what it creates may be committed any moment, before the
    /// session hears of it. Meanwhile no session runs anything early.
    changing: AtomicU64,
    /// The last catalog reading: when it started, `changes` then, and what
    /// it found.
    last: Mutex<Option<(Instant, u64, Arc<Catalog>)>>,
}

impl Database {
    fn of(name: &str) -> Arc<Database> {
        static DATABASES: OnceLock<Mutex<HashMap<String, Arc<Database>>>> = OnceLock::new();
        lock(DATABASES.get_or_init(Default::default))
            .entry(name.to_owned())
            .or_default()
            .clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a session knows of such code in its database.
#[derive(Debug)]
pub(crate) struct HiddenCode {
    database: Arc<Database>,
    /// `changes` when the catalog was read.
    read_at: u64,
    /// The catalog holds some, or this session may have created some.
    found: bool,
    /// What the session's catalog reading found (`None`: it could not be
    /// read).
    catalog: Option<Arc<Catalog>>,
    /// This session sent a statement that may have created some, and its
    /// transaction has not ended yet.
    changing: bool,
}

/// A login's catalog reading, begun.
pub(crate) struct Reading {
    database: Arc<Database>,
    started: Instant,
    read_at: u64,
}

impl HiddenCode {
    /// At login: what a recent reading of the catalog found (see
    /// [`READING_SERVES`]), or the reading to make.
    pub(crate) fn at_login(database: &str) -> Result<HiddenCode, Reading> {
        let database = Database::of(database);
        let last = lock(&database.last).clone();
        let read_at = database.changes.load(Ordering::SeqCst);
        match last {
            Some((started, at, catalog)) if at == read_at && started.elapsed() < READING_SERVES => {
                Ok(HiddenCode {
                    database,
                    read_at,
                    found: catalog.found,
                    catalog: Some(catalog),
                    changing: false,
                })
            }
            _ => Err(Reading {
                database,
                started: Instant::now(),
                read_at,
            }),
        }
    }

    /// Whether a statement that names no function may run early: the
    /// catalog showed no such code and no session of this gateway may have
    /// created any since.
    pub(crate) fn none(&self) -> bool {
        !self.found && self.reading_holds()
    }

    /// Whether the catalog may still be as it was read: no session of this
    /// gateway sent a change since, and none is in flight.
    fn reading_holds(&self) -> bool {
        self.database.changing.load(Ordering::SeqCst) == 0
            && self.database.changes.load(Ordering::SeqCst) == self.read_at
    }

    /// Whether every function `names` (as a statement calls them) can only
    /// be a built-in one that runs no SQL text of its own: calling them
    /// creates no code. Known only while no change may have created a
    /// function since the reading.
    pub(crate) fn calls_are_builtins(&self, names: &[String]) -> bool {
        self.reading_holds()
            && self.catalog.as_ref().is_some_and(|catalog| {
                catalog.all_builtin(names)
                    && Catalog::none_in(catalog.creating_code.as_ref(), names)
            })
    }

    /// [`HiddenCode::calls_are_builtins`], and none is volatile: calling
    /// them changes nothing.
    pub(crate) fn calls_are_stable_builtins(&self, names: &[String]) -> bool {
        self.calls_are_builtins(names)
            && self
                .catalog
                .as_ref()
                .is_some_and(|catalog| Catalog::none_in(catalog.volatile.as_ref(), names))
    }

    /// A statement that may create such code is about to be sent.
    pub(crate) fn sending_change(&mut self) {
        self.found = true;
        if !std::mem::replace(&mut self.changing, true) {
            self.database.changing.fetch_add(1, Ordering::SeqCst);
        }
        self.database.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// The server is idle again (ReadyForQuery `I`): a change this
    /// session sent is committed or rolled back by now.
    pub(crate) fn transaction_ended(&mut self) {
        if std::mem::take(&mut self.changing) {
            // Counted before the session stops counting as changing, so no
            // session sees neither.
            self.database.changes.fetch_add(1, Ordering::SeqCst);
            self.database.changing.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for HiddenCode {
    /// A session that ends mid-change: its server connection closes, and
    /// the change is rolled back or was committed.
    fn drop(&mut self) {
        self.transaction_ended();
    }
}

impl Reading {
    #[cfg(test)]
    fn new(database: &str) -> Reading {
        let database = Database::of(database);
        let read_at = database.changes.load(Ordering::SeqCst);
        Reading {
            database,
            started: Instant::now(),
            read_at,
        }
    }

    /// The catalog's answer (`None`: it could not be read, so assume some;
    /// kept for the next logins only when it was read).
    pub(crate) fn read(self, catalog: Option<Catalog>) -> HiddenCode {
        let catalog = catalog.map(Arc::new);
        if let Some(catalog) = &catalog {
            *lock(&self.database.last) = Some((self.started, self.read_at, catalog.clone()));
        }
        HiddenCode {
            database: self.database,
            read_at: self.read_at,
            found: catalog.as_ref().is_none_or(|catalog| catalog.found),
            catalog,
            changing: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login's view, reading the catalog (which says `found`) if need be.
    fn login(database: &str, found: bool) -> (HiddenCode, bool) {
        match HiddenCode::at_login(database) {
            Ok(known) => (known, false),
            Err(reading) => (
                reading.read(Some(Catalog {
                    found,
                    ..Catalog::default()
                })),
                true,
            ),
        }
    }

    #[test]
    fn a_change_sent_by_one_session_stops_early_runs_in_every_session_of_its_database() {
        let (mut first, read) = login("hidden-a", false);
        assert!(read);
        let (second, read) = login("hidden-a", false);
        assert!(!read, "a recent reading serves the next login");
        let (elsewhere, _) = login("hidden-b", false);
        assert!(first.none() && second.none() && elsewhere.none());
        first.sending_change();
        assert!(!first.none() && !second.none());
        assert!(elsewhere.none(), "another database is not concerned");
        // A session that logs in once the change's transaction ended reads
        // the catalog anew.
        first.transaction_ended();
        let (later, read) = login("hidden-a", false);
        assert!(read && later.none());
    }

    #[test]
    fn nothing_runs_early_while_a_change_may_commit_nor_on_a_reading_it_raced() {
        let (mut changer, _) = login("hidden-c", false);
        changer.sending_change();
        changer.sending_change();
        // The change may be committed before the session hears of it: a
        // login reads the catalog meanwhile (which may not show it yet)
        // and waits like every other session.
        let (racing, read) = login("hidden-c", false);
        assert!(read && !racing.none());
        changer.transaction_ended();
        assert!(!racing.none(), "its reading may predate the commit");
        // A login after it reads anew; the session counted as changing
        // once, and ending again counts nothing.
        let (after, read) = login("hidden-c", false);
        assert!(read && after.none());
        changer.transaction_ended();
        assert!(after.none());
        // A session that ends mid-change stops counting as changing.
        let (mut gone, _) = login("hidden-c", false);
        gone.sending_change();
        drop(gone);
        let (last, _) = login("hidden-c", false);
        assert!(last.none());
    }

    #[test]
    fn found_or_unread_code_stops_early_runs() {
        let (found, _) = login("hidden-d", true);
        assert!(!found.none());
        let (cached, read) = login("hidden-d", false);
        assert!(
            !read && !cached.none(),
            "the reading that found some serves"
        );
        assert!(!Reading::new("hidden-e").read(None).none());
        let (unread, read) = login("hidden-e", false);
        assert!(read, "a failed reading serves no one");
        assert!(unread.none());
    }

    #[test]
    fn a_reading_serves_for_a_while_only() {
        let (_, read) = login("hidden-f", false);
        assert!(read);
        if let Some((started, _, _)) = lock(&Database::of("hidden-f").last).as_mut() {
            *started -= READING_SERVES;
        }
        let (_, read) = login("hidden-f", false);
        assert!(read);
    }

    #[test]
    fn calls_are_weighed_by_the_names_the_catalog_reading_found() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect();
        let catalog = Catalog {
            found: false,
            creating_code: Some(names(&[
                "audit_me",
                "query_to_xml",
                "pg_catalog.func",
                "upper",
            ])),
            volatile: Some(names(&["nextval", "random"])),
            builtin: Some(names(&[
                "count",
                "lower",
                "upper",
                "nextval",
                "random",
                "query_to_xml",
                "func",
            ])),
        };
        let mut session = match HiddenCode::at_login("hidden-g") {
            Err(reading) => reading.read(Some(catalog)),
            Ok(_) => unreachable!("first login"),
        };
        let calls = |list: &[&str]| -> Vec<String> { names(list).into_iter().collect() };
        assert!(session.calls_are_stable_builtins(&calls(&["count", "pg_catalog.lower"])));
        assert!(session.calls_are_builtins(&calls(&["nextval"])));
        assert!(!session.calls_are_stable_builtins(&calls(&["count", "nextval"])));
        // A built-in name that a user-written function also has.
        assert!(!session.calls_are_builtins(&calls(&["upper"])));
        // A name no function had at the reading: one created since.
        assert!(!session.calls_are_builtins(&calls(&["count", "made_later"])));
        // A schema other than pg_catalog holds no built-in function.
        assert!(!session.calls_are_builtins(&calls(&["public.lower"])));
        // A qualified name is weighed by its last part too, and a name with
        // a dot in it (a quoted `"pg_catalog.func"`) by the whole.
        assert!(!session.calls_are_builtins(&calls(&["pg_catalog.upper"])));
        assert!(!session.calls_are_builtins(&calls(&["pg_catalog.func"])));
        assert!(session.calls_are_builtins(&calls(&["func"])));
        assert!(!session.calls_are_builtins(&calls(&["pg_catalog.my.func"])));
        assert!(!session.calls_are_builtins(&calls(&["lower", "query_to_xml"])));
        assert!(
            !session.calls_are_builtins(&calls(&["cöunt"])),
            "no built-in name"
        );
        // Once a change may have created a function, nothing is known.
        session.sending_change();
        assert!(!session.calls_are_builtins(&calls(&["count"])));
        // Nor where the catalog could not be read, or its names not.
        let unread = Reading::new("hidden-h").read(None);
        assert!(!unread.calls_are_builtins(&calls(&["count"])));
        let unnamed = Reading::new("hidden-i").read(Some(Catalog::default()));
        assert!(unnamed.none() && !unnamed.calls_are_builtins(&calls(&["count"])));
        let no_builtins = Reading::new("hidden-j").read(Some(Catalog {
            creating_code: Some(names(&["audit_me"])),
            volatile: Some(names(&["random"])),
            ..Catalog::default()
        }));
        assert!(!no_builtins.calls_are_builtins(&calls(&["count"])));
    }
}
