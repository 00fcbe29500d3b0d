//! ProcessUtility_hook: refuses tampering commands in gateway sessions,
//! enforces protected tables for utility commands the executor never sees
//! (TRUNCATE, LOCK, CREATE TRIGGER/RULE), and turns `COPY table TO` on a table
//! with masked columns into `COPY (SELECT …) TO` so it is masked like a query.

use crate::error::HoopError;
use crate::guc;
use crate::hooks::{executor, next};
use crate::masking::is_protected_parameter;
use crate::nodes::{list_length, list_ptrs, node_tag};
use crate::policy::{self, RelationPolicy};
use crate::scope;
use crate::session;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_char, c_void, CStr};
use std::rc::Rc;

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

pub(crate) unsafe fn install() {
    PREVIOUS = pg_sys::ProcessUtility_hook;
    pg_sys::ProcessUtility_hook = Some(process_utility);
}

#[allow(clippy::too_many_arguments)]
#[pg_guard]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // Only plain values live across the call to the next hook: an ERROR
    // there passes through this frame untouched (see hooks::next).
    let (pstmt, kind) = before_utility(pstmt);
    match kind {
        Kind::View => scope::begin_view(),
        Kind::Matview => scope::begin_matview(),
        Kind::Other => {}
    }
    next::process_utility(
        PREVIOUS,
        pstmt,
        query_string,
        read_only_tree,
        context,
        params,
        query_env,
        dest,
        qc,
    );
    match kind {
        Kind::View => scope::end_view(),
        Kind::Matview => scope::end_matview(),
        Kind::Other => {}
    }
}

/// What a utility statement does that hoop must know while it runs.
#[derive(Clone, Copy)]
enum Kind {
    /// CREATE VIEW: its query is stored as written.
    View,
    /// CREATE MATERIALIZED VIEW, REFRESH MATERIALIZED VIEW: stores rows.
    Matview,
    Other,
}

/// hoop's own checks before a utility command runs; returns the statement to
/// run (a rewritten COPY) and what kind of statement it is.
unsafe fn before_utility(pstmt: *mut pg_sys::PlannedStmt) -> (*mut pg_sys::PlannedStmt, Kind) {
    // Transaction control is all an aborted transaction accepts, and it
    // touches no table: nothing to check, and no catalog may be read then.
    if policy::internal() || !pg_sys::IsTransactionState() {
        return (pstmt, Kind::Other);
    }
    let stmt = (*pstmt).utilityStmt;
    if session::is_gateway_backend() {
        refuse_in_gateway_session(stmt);
    }
    enforce_protected_tables(stmt);
    let kind = match node_tag(stmt) {
        pg_sys::NodeTag::T_ViewStmt => Kind::View,
        pg_sys::NodeTag::T_RefreshMatViewStmt => Kind::Matview,
        pg_sys::NodeTag::T_CreateTableAsStmt
            if (*(stmt as *mut pg_sys::CreateTableAsStmt)).objtype
                == pg_sys::ObjectType::OBJECT_MATVIEW =>
        {
            Kind::Matview
        }
        _ => Kind::Other,
    };
    (rewrite_copy_to(pstmt).unwrap_or(pstmt), kind)
}

unsafe fn cstr(ptr: *const c_char) -> String {
    if ptr.is_null() {
        String::new()
    } else {
        CStr::from_ptr(ptr).to_string_lossy().into_owned()
    }
}

fn blocked(command: impl Into<String>, why: &str) -> ! {
    HoopError::Blocked {
        command: command.into(),
        why: why.to_string(),
    }
    .report()
}

/// Refuses SET/RESET of a protected parameter (`role`, `session_authorization`,
/// `hoop.*`); replacing `hoop.session` with a new token is left to its check hook.
unsafe fn check_variable_set(set: *mut pg_sys::VariableSetStmt, context: &str) {
    use pg_sys::VariableSetKind::*;
    let kind = (*set).kind;
    if kind == VAR_RESET_ALL || kind == VAR_SET_MULTI {
        return;
    }
    let name = cstr((*set).name).to_ascii_lowercase();
    if !is_protected_parameter(&name) {
        return;
    }
    if name == hoop_common::names::GUC_SESSION && kind == VAR_SET_VALUE && context.is_empty() {
        return;
    }
    let verb = if kind == VAR_RESET { "RESET" } else { "SET" };
    let what = match name.as_str() {
        "role" => format!("{verb} ROLE"),
        "session_authorization" => format!("{verb} SESSION AUTHORIZATION"),
        other => format!("{verb} {other}"),
    };
    let what = if context.is_empty() {
        what
    } else {
        format!("{context} … {what}")
    };
    blocked(
        what,
        "a gateway session keeps the role and hoop settings the gateway established",
    );
}

unsafe fn check_set_options(options: *mut pg_sys::List, context: &str) {
    for option in list_ptrs(options) {
        let def = option as *mut pg_sys::DefElem;
        if node_tag(def as *mut pg_sys::Node) != pg_sys::NodeTag::T_DefElem {
            continue;
        }
        let arg = (*def).arg;
        if cstr((*def).defname) == "set"
            && !arg.is_null()
            && node_tag(arg) == pg_sys::NodeTag::T_VariableSetStmt
        {
            check_variable_set(arg as *mut pg_sys::VariableSetStmt, context);
        }
    }
}

unsafe fn relation_policy(
    relation: *mut pg_sys::RangeVar,
) -> Option<(pg_sys::Oid, Rc<RelationPolicy>)> {
    if relation.is_null() {
        return None;
    }
    let relid = pg_sys::RangeVarGetRelidExtended(
        relation,
        pg_sys::NoLock as _,
        pg_sys::RVROption::RVR_MISSING_OK as _,
        None,
        std::ptr::null_mut(),
    );
    if relid == pg_sys::InvalidOid {
        return None;
    }
    policy::lookup(relid).map(|policy| (relid, policy))
}

/// The commands gateway sessions may never run.
unsafe fn refuse_in_gateway_session(stmt: *mut pg_sys::Node) {
    use pg_sys::NodeTag::*;
    let tag = CStr::from_ptr(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(stmt)))
        .to_string_lossy()
        .to_uppercase();
    match node_tag(stmt) {
        T_VariableSetStmt => check_variable_set(stmt as *mut pg_sys::VariableSetStmt, ""),
        T_AlterSystemStmt => blocked(
            "ALTER SYSTEM",
            "server configuration cannot be changed from a gateway session",
        ),
        T_CreateExtensionStmt | T_AlterExtensionStmt | T_AlterExtensionContentsStmt => blocked(
            tag.clone(),
            "extensions cannot be installed or changed from a gateway session",
        ),
        T_DropStmt
            if (*(stmt as *mut pg_sys::DropStmt)).removeType
                == pg_sys::ObjectType::OBJECT_EXTENSION =>
        {
            blocked(
                "DROP EXTENSION",
                "extensions cannot be removed from a gateway session",
            )
        }
        T_CreateRoleStmt | T_AlterRoleStmt | T_AlterRoleSetStmt | T_DropRoleStmt
        | T_GrantRoleStmt => blocked(
            tag.clone(),
            "roles cannot be managed from a gateway session",
        ),
        T_RenameStmt
            if (*(stmt as *mut pg_sys::RenameStmt)).renameType
                == pg_sys::ObjectType::OBJECT_ROLE =>
        {
            blocked(
                "ALTER ROLE … RENAME",
                "roles cannot be managed from a gateway session",
            )
        }
        T_CopyStmt => {
            let copy = stmt as *mut pg_sys::CopyStmt;
            if (*copy).is_program {
                blocked(
                    "COPY … PROGRAM",
                    "gateway sessions cannot run programs on the database server",
                );
            }
            if !(*copy).filename.is_null() {
                blocked(
                    "COPY to or from a server file",
                    "gateway sessions cannot read or write files on the database server; use COPY … TO STDOUT / FROM STDIN",
                );
            }
        }
        T_LoadStmt => blocked("LOAD", "gateway sessions cannot load libraries"),
        T_DiscardStmt
            if (*(stmt as *mut pg_sys::DiscardStmt)).target == pg_sys::DiscardMode::DISCARD_ALL =>
        {
            blocked(
                "DISCARD ALL",
                "DISCARD ALL would reset the role the gateway established",
            )
        }
        T_CreateFunctionStmt => check_set_options(
            (*(stmt as *mut pg_sys::CreateFunctionStmt)).options,
            "CREATE FUNCTION",
        ),
        T_AlterFunctionStmt => check_set_options(
            (*(stmt as *mut pg_sys::AlterFunctionStmt)).actions,
            "ALTER FUNCTION",
        ),
        T_AlterDatabaseSetStmt => {
            let set = (*(stmt as *mut pg_sys::AlterDatabaseSetStmt)).setstmt;
            if !set.is_null() {
                check_variable_set(set, "ALTER DATABASE");
            }
        }
        T_CreateTrigStmt => {
            if let Some((_, policy)) =
                relation_policy((*(stmt as *mut pg_sys::CreateTrigStmt)).relation)
            {
                blocked(
                    format!(
                        "CREATE TRIGGER on protected table {}",
                        policy.qualified_name()
                    ),
                    "a trigger would see the raw values of protected rows",
                );
            }
        }
        T_RuleStmt => {
            if let Some((_, policy)) = relation_policy((*(stmt as *mut pg_sys::RuleStmt)).relation)
            {
                blocked(
                    format!("CREATE RULE on protected table {}", policy.qualified_name()),
                    "a rule would see the raw values of protected rows",
                );
            }
        }
        _ => {}
    }
    if guc::blocked_commands().contains(&tag) {
        blocked(tag, "the command is listed in hoop.blocked_commands");
    }
}

/// Utility commands that touch protected table data without the executor.
unsafe fn enforce_protected_tables(stmt: *mut pg_sys::Node) {
    use pg_sys::NodeTag::*;
    let (command, relations): (&str, Vec<*mut pg_sys::RangeVar>) = match node_tag(stmt) {
        T_TruncateStmt => (
            "TRUNCATE",
            list_ptrs((*(stmt as *mut pg_sys::TruncateStmt)).relations)
                .map(|r| r.cast())
                .collect(),
        ),
        T_LockStmt => (
            "LOCK TABLE",
            list_ptrs((*(stmt as *mut pg_sys::LockStmt)).relations)
                .map(|r| r.cast())
                .collect(),
        ),
        T_CreateTrigStmt => (
            "CREATE TRIGGER",
            vec![(*(stmt as *mut pg_sys::CreateTrigStmt)).relation],
        ),
        T_RuleStmt => (
            "CREATE RULE",
            vec![(*(stmt as *mut pg_sys::RuleStmt)).relation],
        ),
        _ => return,
    };
    let mut touched = Vec::new();
    for relation in relations {
        if let Some((_, policy)) = relation_policy(relation) {
            executor::require_access(&policy);
            touched.push(policy);
        }
    }
    if !touched.is_empty() {
        executor::audit(command, &touched);
    }
}

unsafe fn make_node<T>(tag: pg_sys::NodeTag) -> *mut T {
    let node = pg_sys::palloc0(std::mem::size_of::<T>()) as *mut pg_sys::Node;
    (*node).type_ = tag;
    node as *mut T
}

unsafe fn column_ref(name: *const c_char) -> *mut pg_sys::Node {
    let column = make_node::<pg_sys::ColumnRef>(pg_sys::NodeTag::T_ColumnRef);
    (*column).fields = pg_sys::lappend(
        std::ptr::null_mut(),
        pg_sys::makeString(pg_sys::pstrdup(name)).cast(),
    );
    (*column).location = -1;
    let target = make_node::<pg_sys::ResTarget>(pg_sys::NodeTag::T_ResTarget);
    (*target).val = column as *mut pg_sys::Node;
    (*target).location = -1;
    target as *mut pg_sys::Node
}

/// `COPY t [(cols)] TO …` on a table with masked columns becomes
/// `COPY (SELECT cols FROM ONLY t) TO …`, which goes through parse analysis
/// and is masked like any query.
unsafe fn rewrite_copy_to(pstmt: *mut pg_sys::PlannedStmt) -> Option<*mut pg_sys::PlannedStmt> {
    let stmt = (*pstmt).utilityStmt;
    if node_tag(stmt) != pg_sys::NodeTag::T_CopyStmt {
        return None;
    }
    let copy = stmt as *mut pg_sys::CopyStmt;
    if (*copy).is_from || (*copy).relation.is_null() || !(*copy).query.is_null() {
        return None;
    }
    let (relid, policy) = relation_policy((*copy).relation)?;
    if policy.masked.is_empty()
        || pg_sys::get_rel_relkind(relid) != pg_sys::RELKIND_RELATION as c_char
    {
        return None;
    }
    let mut targets = std::ptr::null_mut();
    if list_length((*copy).attlist) > 0 {
        for item in list_ptrs((*copy).attlist) {
            let name = (*(item as *mut pg_sys::String)).sval;
            targets = pg_sys::lappend(targets, column_ref(name).cast());
        }
    } else {
        let relation = pgrx::PgRelation::with_lock(relid, pg_sys::AccessShareLock as _);
        for attribute in relation.tuple_desc().iter() {
            if attribute.is_dropped() {
                continue;
            }
            targets = pg_sys::lappend(targets, column_ref(attribute.attname.data.as_ptr()).cast());
        }
    }
    let range = pg_sys::copyObjectImpl((*copy).relation as *const c_void) as *mut pg_sys::RangeVar;
    (*range).inh = false;
    let select = make_node::<pg_sys::SelectStmt>(pg_sys::NodeTag::T_SelectStmt);
    (*select).targetList = targets;
    (*select).fromClause = pg_sys::lappend(std::ptr::null_mut(), range.cast());

    let rewritten = pg_sys::copyObjectImpl(pstmt as *const c_void) as *mut pg_sys::PlannedStmt;
    let new_copy = (*rewritten).utilityStmt as *mut pg_sys::CopyStmt;
    (*new_copy).relation = std::ptr::null_mut();
    (*new_copy).attlist = std::ptr::null_mut();
    (*new_copy).query = select as *mut pg_sys::Node;
    Some(rewritten)
}
