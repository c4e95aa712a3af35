//! Certificate templates: stored as one row each (lists comma-separated), served as validated
//! `core::model::Template`s. A row that no longer reads or validates is reported, not served.
use crate::{duplicate, join_list, parse, split_list, to_u32, Result, Store, StoreError};
use autoenroll_core::model::{KeyPolicy, NamePolicy, Template};
use autoenroll_core::UnixTime;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, FromRow};

#[derive(FromRow)]
struct TemplateRow {
    name: String,
    oid: String,
    major: i64,
    minor: i64,
    description: String,
    validity_secs: i64,
    renewal_secs: i64,
    key_algorithm: String,
    min_key_bits: i64,
    key_usage: String,
    ext_key_usage: String,
    subject_from: String,
    allow_san: i64,
    enroll: i64,
    autoenroll: i64,
    pend_all: i64,
    same_key_renewal: i64,
    superseded: String,
    created_at: i64,
    updated_at: i64,
    renewal_grace_secs: i64,
    retry_interval_secs: i64,
    grants: String,
    dns_suffixes: String,
    ip_ranges: String,
    allow_wildcards: i64,
    allow_server_names: i64,
    renewal_subset: i64,
    key_types: String,
    allow_mdm: i64,
    for_users: i64,
}

// A macro, not a const: sqlx takes only literal SQL, so queries are built with `concat!`.
macro_rules! columns {
    () => {
        "name, oid, major, minor, description, validity_secs, renewal_secs, key_algorithm, min_key_bits, \
         key_usage, ext_key_usage, subject_from, allow_san, enroll, autoenroll, pend_all, same_key_renewal, \
         superseded, created_at, updated_at, renewal_grace_secs, retry_interval_secs, grants, dns_suffixes, \
         ip_ranges, allow_wildcards, allow_server_names, renewal_subset, key_types, allow_mdm, for_users"
    };
}

/// A stored template this version cannot serve, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTemplate {
    pub name: String,
    pub reason: String,
}

/// Every stored template: the ones that validate, and the ones that do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    pub valid: Vec<Template>,
    pub invalid: Vec<InvalidTemplate>,
}

impl TryFrom<TemplateRow> for Template {
    type Error = StoreError;
    fn try_from(r: TemplateRow) -> Result<Template> {
        let key = r.name.as_str();
        Ok(Template {
            oid: parse("template OID", key, &r.oid)?,
            major: to_u32("template major version", key, r.major)?,
            minor: to_u32("template minor version", key, r.minor)?,
            description: r.description.clone(),
            validity_secs: r.validity_secs,
            renewal_secs: r.renewal_secs,
            renewal_grace_secs: r.renewal_grace_secs,
            retry_interval_secs: r.retry_interval_secs,
            key: KeyPolicy {
                algorithm: parse("template key algorithm", key, &r.key_algorithm)?,
                min_rsa_bits: to_u32("template minimum key size", key, r.min_key_bits)?,
                same_key_renewal: r.same_key_renewal != 0,
                accept: parse_list("template key types", key, &r.key_types)?,
            },
            key_usage: parse_list("template key usage", key, &r.key_usage)?,
            ekus: parse_list("template EKU", key, &r.ext_key_usage)?,
            subject_from: parse("template subject source", key, &r.subject_from)?,
            allow_san: r.allow_san != 0,
            enroll: r.enroll != 0,
            autoenroll: r.autoenroll != 0,
            pend_all: r.pend_all != 0,
            supersedes: split_list(&r.superseded),
            grants: parse_list("template grant", key, &r.grants)?,
            names: NamePolicy {
                dns_suffixes: split_list(&r.dns_suffixes),
                ip_ranges: parse_list("template IP range", key, &r.ip_ranges)?,
                allow_wildcards: r.allow_wildcards != 0,
                allow_server_names: r.allow_server_names != 0,
                renewal_subset: r.renewal_subset != 0,
            },
            allow_mdm: r.allow_mdm != 0,
            for_users: r.for_users != 0,
            created_at: UnixTime(r.created_at),
            updated_at: UnixTime(r.updated_at),
            name: r.name,
        })
    }
}

fn parse_list<T: std::str::FromStr>(what: &'static str, key: &str, s: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    split_list(s).iter().map(|x| parse(what, key, x)).collect()
}

/// A stored template as it is, validated or not (for repairs).
fn read_as_stored(row: &AnyRow) -> Result<Template> {
    TemplateRow::from_row(row)?.try_into()
}

/// Forgets the cached templates when a write ends, whether it succeeded, failed or was
/// cancelled (the database may have changed in every case).
struct ForgetOnDrop<'a>(&'a TemplateCache);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.forget();
    }
}

/// Binds `$1..$31` in `columns!()` order.
fn bind_all<'q>(q: Query<'q, Any, AnyArguments>, t: &'q Template) -> Query<'q, Any, AnyArguments> {
    q.bind(&t.name)
        .bind(t.oid.to_string())
        .bind(i64::from(t.major))
        .bind(i64::from(t.minor))
        .bind(&t.description)
        .bind(t.validity_secs)
        .bind(t.renewal_secs)
        .bind(t.key.algorithm.to_string())
        .bind(i64::from(t.key.min_rsa_bits))
        .bind(join_list(&t.key_usage))
        .bind(join_list(&t.ekus))
        .bind(t.subject_from.as_str())
        .bind(i64::from(t.allow_san))
        .bind(i64::from(t.enroll))
        .bind(i64::from(t.autoenroll))
        .bind(i64::from(t.pend_all))
        .bind(i64::from(t.key.same_key_renewal))
        .bind(t.supersedes.join(","))
        .bind(t.created_at.0)
        .bind(t.updated_at.0)
        .bind(t.renewal_grace_secs)
        .bind(t.retry_interval_secs)
        .bind(join_list(&t.grants))
        .bind(t.names.dns_suffixes.join(","))
        .bind(join_list(&t.names.ip_ranges))
        .bind(i64::from(t.names.allow_wildcards))
        .bind(i64::from(t.names.allow_server_names))
        .bind(i64::from(t.names.renewal_subset))
        .bind(join_list(&t.key.accept))
        .bind(i64::from(t.allow_mdm))
        .bind(i64::from(t.for_users))
}

/// A stored template as read: served, or why not (`StoreError::Invalid`'s fields).
struct Entry {
    name: String,
    oid: String,
    read: std::result::Result<Template, (&'static str, String)>,
}

/// One stored row as the cache keeps it. A row that does not decode or does not validate is
/// reported under its name; the others are still served.
fn entry(row: &AnyRow) -> Entry {
    let column = |name: &str| sqlx::Row::try_get::<String, _>(row, name).unwrap_or_default();
    let read = match read_as_stored(row) {
        Ok(t) => t.validate().map(|()| t).map_err(|e| ("template", e.to_string())),
        Err(StoreError::Invalid { what, reason, .. }) => Err((what, reason)),
        Err(other) => Err(("template", other.to_string())),
    };
    Entry { name: column("name"), oid: column("oid"), read }
}

impl Entry {
    fn get(&self) -> Result<Template> {
        self.read.clone().map_err(|(what, reason)| StoreError::Invalid { what, key: self.name.clone(), reason })
    }
}

/// Every template as last read, and the database's template version then (a trigger bumps it
/// on any change to `templates`, whichever replica makes it).
struct Cached {
    version: i64,
    checked: std::time::Instant,
    entries: std::sync::Arc<Vec<Entry>>,
}

/// Templates change rarely and are read on every enrollment: they are served from memory. A
/// read trusts the memory for `fresh_for` (SQLite: not at all, the check is an inline read;
/// PostgreSQL: 1 s, so another replica's change shows within that); then one statement
/// compares the version, and only a changed version reads and parses them again. This
/// process's own writes forget the memory at once.
pub(crate) struct TemplateCache {
    cached: std::sync::Mutex<Option<Cached>>,
    /// Counts this process's writes: a read that raced one does not keep what it read.
    writes: std::sync::atomic::AtomicU64,
    fresh_for: std::time::Duration,
}

impl TemplateCache {
    pub(crate) fn trusted_for(fresh_for: std::time::Duration) -> TemplateCache {
        TemplateCache { cached: Default::default(), writes: Default::default(), fresh_for }
    }

    fn forget(&self) {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Store {
    /// The templates, from memory while fresh (unless `check`), else after checking the
    /// database's version.
    async fn cached_templates(&self, check: bool) -> Result<std::sync::Arc<Vec<Entry>>> {
        let cache = &self.templates;
        let writes = cache.writes.load(std::sync::atomic::Ordering::SeqCst);
        let known = {
            let cached = cache.cached.lock().unwrap_or_else(|p| p.into_inner());
            match &*cached {
                Some(c) if !check && c.checked.elapsed() < cache.fresh_for => return Ok(c.entries.clone()),
                Some(c) => Some((c.version, c.entries.clone())),
                None => None,
            }
        };
        // The version first: a change landing between the two reads leaves rows newer than the
        // version, which the next check reads again (never older rows under a newer version).
        const VERSION_SQL: &str = "SELECT version FROM template_version WHERE id = 1";
        let version: Option<i64> = match &self.sqlite {
            Some(sqlite) => sqlite.readers.one(VERSION_SQL, &[], |r| r.get(0))?,
            None => sqlx::query_as::<_, (i64,)>(VERSION_SQL).fetch_optional(&self.pool).await?.map(|(v,)| v),
        };
        let version = version.ok_or_else(|| StoreError::Invalid {
            what: "template version",
            key: "template_version".into(),
            reason: "the row is missing".into(),
        })?;
        let entries = match known {
            Some((v, entries)) if v == version => entries,
            _ => {
                let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM templates ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?;
                let entries: Vec<Entry> = rows.iter().map(entry).collect();
                std::sync::Arc::new(entries)
            }
        };
        let mut cached = cache.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cache.writes.load(std::sync::atomic::Ordering::SeqCst) == writes {
            *cached = Some(Cached { version, checked: std::time::Instant::now(), entries: entries.clone() });
        }
        Ok(entries)
    }

    /// Every template, by name; stored ones that no longer validate are listed apart. Checked
    /// against the database's version (listings are for people, not the hot path).
    pub async fn templates(&self) -> Result<Templates> {
        let mut out = Templates::default();
        for e in self.cached_templates(true).await?.iter() {
            match &e.read {
                Ok(t) => out.valid.push(t.clone()),
                Err((_, reason)) => out.invalid.push(InvalidTemplate { name: e.name.clone(), reason: reason.clone() }),
            }
        }
        Ok(out)
    }

    /// A template by name; `StoreError::Invalid` when it is stored but no longer validates.
    pub async fn template(&self, name: &str) -> Result<Option<Template>> {
        self.cached_template(|e| e.name == name).await
    }

    /// The template `matches` picks. One the memory does not hold is looked for again after a
    /// version check: a template just created elsewhere (the CLI, another replica) is found at
    /// once; misses are refusals, rare enough to cost a statement.
    async fn cached_template(&self, matches: impl Fn(&Entry) -> bool) -> Result<Option<Template>> {
        let found = |entries: &[Entry]| entries.iter().find(|e| matches(e)).map(Entry::get).transpose();
        match found(&self.cached_templates(false).await?)? {
            Some(t) => Ok(Some(t)),
            None => found(&self.cached_templates(true).await?),
        }
    }

    /// A template by name as stored, even when it no longer validates (so an administrator can
    /// repair it); `StoreError::Invalid` only when a field cannot be read at all.
    pub async fn template_as_stored(&self, name: &str) -> Result<Option<Template>> {
        let sql = concat!("SELECT ", columns!(), " FROM templates WHERE name = $1");
        let row = sqlx::query(sql).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(read_as_stored).transpose()
    }

    pub async fn template_by_oid(&self, oid: &str) -> Result<Option<Template>> {
        self.cached_template(|e| e.oid == oid).await
    }

    pub async fn insert_template(&self, t: &Template) -> Result<()> {
        let _writer = self.writer().await;
        let _forget = ForgetOnDrop(&self.templates);
        let sql = concat!(
            "INSERT INTO templates (",
            columns!(),
            ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,\
             $23,$24,$25,$26,$27,$28,$29,$30,$31)"
        );
        bind_all(sqlx::query(sql), t)
            .execute(&self.pool)
            .await
            .map_err(duplicate(|| format!("template {} (or its OID {})", t.name, t.oid)))?;
        Ok(())
    }

    /// Replaces a template's row (matched by name). Returns false when it does not exist.
    pub async fn update_template(&self, t: &Template) -> Result<bool> {
        let _writer = self.writer().await;
        let _forget = ForgetOnDrop(&self.templates);
        let sql = "UPDATE templates SET oid=$2, major=$3, minor=$4, description=$5, validity_secs=$6, \
             renewal_secs=$7, key_algorithm=$8, min_key_bits=$9, key_usage=$10, ext_key_usage=$11, \
             subject_from=$12, allow_san=$13, enroll=$14, autoenroll=$15, pend_all=$16, \
             same_key_renewal=$17, superseded=$18, created_at=$19, updated_at=$20, \
             renewal_grace_secs=$21, retry_interval_secs=$22, grants=$23, dns_suffixes=$24, ip_ranges=$25, \
             allow_wildcards=$26, allow_server_names=$27, renewal_subset=$28, key_types=$29, allow_mdm=$30, \
             for_users=$31 WHERE name=$1";
        let r = bind_all(sqlx::query(sql), t).execute(&self.pool).await?;
        Ok(r.rows_affected() == 1)
    }
}
