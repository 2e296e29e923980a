# git, gcc and sqlite3: the whole workload script runs under the shim (every
# process it starts inherits LD_PRELOAD); what it prints must be identical.

# A fixed identity and clock, so commit ids are the same in every run.
git_env() {
    export HOME="$PWD/home" GIT_CONFIG_NOSYSTEM=1
    export GIT_AUTHOR_NAME=apps GIT_AUTHOR_EMAIL=apps@example.invalid
    export GIT_COMMITTER_NAME=apps GIT_COMMITTER_EMAIL=apps@example.invalid
    export GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"
    mkdir -p "$HOME"
}

app_git() {
    git_env
    under_test bash "$APPS_DIR/git_workload.sh" "$PWD/repo" > result 2> err.txt
    local st=$?
    cat err.txt
    return $st
}

app_gcc() {
    local st
    mkdir -p src && cp "$APPS_DIR"/cprog/*.c "$APPS_DIR"/cprog/*.h src/
    under_test bash -c '
        set -e
        cd src
        for f in hash table main; do gcc -O2 -Wall -Werror -c $f.c -o $f.o; done
        gcc -O2 hash.o table.o main.o -o cprog
        sha256sum hash.o table.o main.o
        ./cprog 32 1024
        # one bigger translation unit: many generated functions
        awk "BEGIN { for (i = 0; i < 400; i++) printf \"int f%d(int x) { int s = 0; for (int j = 0; j < x; j++) s += j * %d ^ (s >> 3); return s; }\n\", i, i;
                     printf \"int main(void) { long t = 0;\n\"; for (i = 0; i < 400; i++) printf \"t += f%d(%d);\n\", i, i % 97; printf \"return (int)(t & 0x7f); }\n\" }" > gen.c
        gcc -O2 gen.c -o gen
        sha256sum gen.c
        set +e; ./gen; echo "gen exit=$?"
    ' > result 2> err.txt
    st=$?
    cat err.txt
    return $st
}

app_sqlite() {
    local st
    under_test sqlite3 db.sqlite > result 2> err.txt <<'SQL'
PRAGMA page_size = 4096;
PRAGMA cache_size = -262144;
PRAGMA synchronous = OFF;
PRAGMA journal_mode = MEMORY;
CREATE TABLE blobs(id INTEGER PRIMARY KEY, kind TEXT, b BLOB);
-- 2,000 copies of one 64 KiB blob (hex text of a deterministic sequence), 200 distinct 16 KiB ones.
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO blobs(kind, b) SELECT 'dup', (SELECT CAST(group_concat(printf('%08x', (k * 2654435761) % 4294967296), '') AS BLOB)
                                        FROM (WITH RECURSIVE m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < 8192) SELECT k FROM m))
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
INSERT INTO blobs(kind, b) SELECT 'uniq', (SELECT CAST(group_concat(printf('%08x', (k * 2654435761 + i * 40503) % 4294967296), '') AS BLOB)
                                         FROM (WITH RECURSIVE m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < 2048) SELECT k FROM m))
FROM n;
SELECT kind, count(*), sum(length(b)), count(DISTINCT b) FROM blobs GROUP BY kind ORDER BY kind;
SELECT hex(sha3_query('SELECT id, kind, b FROM blobs ORDER BY id'));
UPDATE blobs SET b = zeroblob(65536) WHERE id % 100 = 0;
SELECT count(*) FROM blobs WHERE b = zeroblob(65536);
SELECT hex(sha3_query('SELECT id, kind, b FROM blobs ORDER BY id'));
PRAGMA integrity_check;
VACUUM;
PRAGMA integrity_check;
SELECT count(*), sum(length(b)) FROM blobs;
SQL
    st=$?
    cat err.txt
    [ -s err.txt ] && problem "sqlite3 wrote to stderr: $(head -3 err.txt)"
    grep -qx ok result || problem "sqlite3: integrity_check did not say ok"
    return $st
}

register_tools() {
    register_app git 300
    register_app gcc 300
    register_app sqlite 300
}
