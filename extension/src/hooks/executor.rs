//! Executor hooks: ExecutorCheckPerms_hook refuses protected tables to
//! backends without a usable gateway session (installed from compat.rs, whose
//! signature differs by version); ExecutorStart_hook writes the audit line.

use crate::error::{self, HoopError};
use crate::guc;
use crate::hooks::next;
use crate::masking::may_see_raw;
use crate::nodes::{list_length, list_nth};
use crate::policy::{self, RelationPolicy};
use crate::session;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;
use std::rc::Rc;

/// Why a backend may use protected tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    Session,
    Superuser,
    Exempt(String),
}

/// Whether this backend may use protected tables now, or why not.
pub(crate) fn access() -> Result<Access, String> {
    if session::current().is_some() {
        return Ok(Access::Session);
    }
    if session::is_gateway_backend() {
        return Err(session::why_no_session());
    }
    unsafe {
        let outer = pg_sys::GetOuterUserId();
        if !guc::ENFORCE_SUPERUSER.get() && pg_sys::superuser_arg(outer) {
            return Ok(Access::Superuser);
        }
        for name in guc::exempt_roles() {
            let Ok(cname) = CString::new(name.clone()) else {
                continue;
            };
            let role = pg_sys::get_role_oid(cname.as_ptr(), true);
            if role != pg_sys::InvalidOid
                && (role == outer || pg_sys::is_member_of_role_nosuper(outer, role))
            {
                return Ok(Access::Exempt(name));
            }
        }
        Err(format!(
            "{}, and role {} is not listed in {}",
            session::why_no_session(),
            session::role_name(outer),
            hoop_common::names::GUC_EXEMPT_ROLES
        ))
    }
}

/// `pg_statistic` and `pg_statistic_ext_data`: the histograms and most common
/// values of every analyzed column, the undeclared columns of protected tables
/// included (a card number kept in a free-text column shows up there).
fn is_statistics_catalog(relid: pg_sys::Oid) -> bool {
    // pg_statistic_ext_data's fixed OID (catalog/pg_statistic_ext_data.h),
    // not among pgrx's constants.
    const STATISTIC_EXT_DATA_RELATION_ID: pg_sys::Oid = pg_sys::Oid::from_u32(3429);
    relid == pg_sys::StatisticRelationId || relid == STATISTIC_EXT_DATA_RELATION_ID
}

/// Only a session that sees raw values may read them: a superuser without a
/// gateway session, while `hoop.enforce_superuser` is off.
fn may_read_statistics() -> bool {
    matches!(access(), Ok(Access::Superuser))
}

/// Raises the refusal for `policy` unless this backend may use it.
pub(crate) fn require_access(policy: &RelationPolicy) {
    if let Err(reason) = access() {
        HoopError::NoGatewaySession {
            table: policy.qualified_name(),
            reason,
        }
        .report();
    }
}

/// The version-neutral part of ExecutorCheckPerms_hook.
pub(crate) unsafe fn check_range_table(range_table: *mut pg_sys::List, ereport: bool) -> bool {
    if policy::internal() || pg_sys::ParallelWorkerNumber >= 0 {
        // Workers run the plan their leader already checked.
        return true;
    }
    if !policy::any_protected() {
        return true;
    }
    for n in 0..list_length(range_table) {
        let rte = list_nth(range_table, n) as *mut pg_sys::RangeTblEntry;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
            continue;
        }
        if is_statistics_catalog((*rte).relid) && !may_read_statistics() {
            if !ereport {
                return false;
            }
            HoopError::Hidden {
                what: "column statistics (pg_stats, pg_stats_ext)".into(),
                why: "in a database with protected tables, statistics hold sample values of their columns; only a superuser outside gateway sessions may read them".into(),
            }
            .report();
        }
        let Some(policy) = policy::lookup((*rte).relid) else {
            continue;
        };
        if access().is_err() {
            if !ereport {
                return false;
            }
            require_access(&policy);
        }
    }
    true
}

static mut PREVIOUS_START: pg_sys::ExecutorStart_hook_type = None;

pub(crate) unsafe fn install() {
    crate::compat::install_check_perms_hook(check_range_table);
    PREVIOUS_START = pg_sys::ExecutorStart_hook;
    pg_sys::ExecutorStart_hook = Some(executor_start);
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    next::executor_start(PREVIOUS_START, query_desc, eflags);
    if policy::internal()
        || pg_sys::ParallelWorkerNumber >= 0
        || eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0
    {
        return;
    }
    let planned = (*query_desc).plannedstmt;
    if planned.is_null() || !policy::any_protected() {
        return;
    }
    let mut touched: Vec<(pg_sys::Oid, Rc<RelationPolicy>)> = Vec::new();
    for n in 0..list_length((*planned).rtable) {
        let rte = list_nth((*planned).rtable, n) as *mut pg_sys::RangeTblEntry;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
            continue;
        }
        if touched.iter().any(|(relid, _)| *relid == (*rte).relid) {
            continue;
        }
        if let Some(policy) = policy::lookup((*rte).relid) {
            touched.push(((*rte).relid, policy));
        }
    }
    if touched.is_empty() {
        return;
    }
    let command = match (*query_desc).operation {
        pg_sys::CmdType::CMD_SELECT => "SELECT",
        pg_sys::CmdType::CMD_INSERT => "INSERT",
        pg_sys::CmdType::CMD_UPDATE => "UPDATE",
        pg_sys::CmdType::CMD_DELETE => "DELETE",
        pg_sys::CmdType::CMD_MERGE => "MERGE",
        _ => "OTHER",
    };
    let policies: Vec<Rc<RelationPolicy>> = touched.into_iter().map(|(_, p)| p).collect();
    audit(command, &policies);
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// One pgaudit-style LOG line (server log only) for a statement touching
/// protected tables: `hoop: AUDIT,<session id>,<subject>,<role>,<command>,<tables>,<masked columns>`.
/// Names only, never a value.
pub(crate) fn audit(command: &str, policies: &[Rc<RelationPolicy>]) {
    let role = unsafe { session::role_name(pg_sys::GetOuterUserId()) };
    let (sid, subject) = match session::current() {
        Some(session) => (session.claims.sid.clone(), session.claims.sub.clone()),
        None => match access() {
            Ok(Access::Superuser) => (
                "-".to_string(),
                "superuser without gateway session".to_string(),
            ),
            Ok(Access::Exempt(role)) => ("-".to_string(), format!("exempt role {role}")),
            _ => ("-".to_string(), "no gateway session".to_string()),
        },
    };
    let tables: Vec<String> = policies.iter().map(|p| p.qualified_name()).collect();
    let masked: Vec<String> = policies
        .iter()
        .flat_map(|p| {
            p.masked
                .iter()
                .filter(|column| !may_see_raw(p, column))
                .map(|column| format!("{}.{}", p.qualified_name(), column.column))
                .collect::<Vec<_>>()
        })
        .collect();
    error::log_server_only(format!(
        "hoop: AUDIT,{},{},{},{},{},{}",
        csv_field(&sid),
        csv_field(&subject),
        csv_field(&role),
        csv_field(command),
        csv_field(&tables.join(";")),
        csv_field(&masked.join(";")),
    ));
}
