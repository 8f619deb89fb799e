// End-to-end pgjdbc client test for Tally's PostgreSQL wire front end.
// Run (Java 17 single-file source launch):
//   java -cp /usr/share/java/postgresql.jar tests/clients/Jdbc.java PORT
// Env: TALLY_HOST (127.0.0.1), TALLY_USER (tally), TALLY_PASSWORD (none), TALLY_DB (tally).
// Ids carry a per-run prefix, so it can run against a ledger that already holds data.
// Exit 0 with "ALL OK" when every check passes, 1 when any failed, 2 when it cannot connect.

import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

public class Jdbc {
    static final List<String> failures = new ArrayList<>();
    static int passed = 0;

    static void check(String what, boolean ok, String detail) {
        if (ok) {
            passed++;
            System.out.println("ok   " + what);
        } else {
            failures.add(what);
            System.out.println("FAIL " + what + " " + detail);
        }
    }

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static String sha256(String s) throws Exception {
        byte[] d = MessageDigest.getInstance("SHA-256").digest(s.getBytes("UTF-8"));
        StringBuilder sb = new StringBuilder();
        for (byte b : d) sb.append(String.format("%02x", b));
        return sb.toString();
    }

    interface Body { void run() throws Exception; }

    static void section(String name, Body body) {
        System.out.println("-- " + name);
        try {
            body.run();
        } catch (SQLException e) {
            failures.add(name);
            System.out.println("FAIL " + name + ": unexpected SQLException " + e.getSQLState() + ": " + e.getMessage());
        } catch (Exception e) {
            failures.add(name);
            System.out.println("FAIL " + name + ": unexpected " + e);
        }
    }

    static void expectError(Connection c, String what, String sqlstate, String sql) {
        try (Statement st = c.createStatement()) {
            st.executeUpdate(sql);
            check(what + " -> " + sqlstate, false, "(the statement succeeded)");
        } catch (SQLException e) {
            check(what + " -> " + sqlstate, sqlstate.equals(e.getSQLState()),
                  "(got SQLSTATE " + e.getSQLState() + ": " + e.getMessage() + ")");
        }
    }

    public static void main(String[] args) throws Exception {
        String port = args.length > 0 ? args[0] : env("TALLY_PORT", "5433");
        String url = "jdbc:postgresql://" + env("TALLY_HOST", "127.0.0.1") + ":" + port + "/" + env("TALLY_DB", "tally");
        Properties props = new Properties();
        props.setProperty("user", env("TALLY_USER", "tally"));
        String pw = System.getenv("TALLY_PASSWORD");
        if (pw != null) props.setProperty("password", pw);
        props.setProperty("connectTimeout", "10");
        props.setProperty("ApplicationName", "tally-jdbc-test");

        Connection conn;
        try {
            conn = DriverManager.getConnection(url, props);
        } catch (SQLException e) {
            System.err.println("Jdbc: cannot connect to " + url + ": " + e.getMessage());
            System.exit(2);
            return;
        }
        final String run = "jdbc" + ProcessHandle.current().pid() + "x" + (System.currentTimeMillis() % 1000000000L);
        final String dn = run + "-dn";

        section("prepared statements", () -> {
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO datanets (datanet, owner) VALUES (?, ?)")) {
                ps.setString(1, dn);
                ps.setString(2, "alice");
                int n = ps.executeUpdate();
                check("PreparedStatement INSERT datanet", n == 1, "(update count " + n + ")");
            }
            // the same PreparedStatement executed repeatedly: pgjdbc switches to a named
            // server-side statement after prepareThreshold (5) executions
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES (?, ?, ?, ?)")) {
                int total = 0;
                for (int i = 0; i < 7; i++) {
                    ps.setString(1, run + "-c" + i);
                    ps.setString(2, dn);
                    ps.setString(3, "acct-" + (i % 3));
                    ps.setString(4, sha256(run + "-c" + i));
                    total += ps.executeUpdate();
                }
                check("PreparedStatement INSERT x7 (server-side prepare)", total == 7, "(total " + total + ")");
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES (?, ?, ?, ?)")) {
                for (int i = 7; i < 10; i++) {
                    ps.setString(1, run + "-c" + i);
                    ps.setString(2, dn);
                    ps.setString(3, "acct-batch");
                    ps.setString(4, sha256(run + "-c" + i));
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check("executeBatch of 3 INSERTs", counts.length == 3, "(" + counts.length + " counts)");
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT contribution, contributor, content_hash, lsn, revoked, inferences, earned "
                    + "FROM contributions WHERE datanet = ? ORDER BY contribution")) {
                ps.setString(1, dn);
                int rows = 0;
                boolean typesOk = true;
                String firstHash = null;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rows++;
                        if (firstHash == null) firstHash = rs.getString("content_hash");
                        long lsn = rs.getLong("lsn");
                        typesOk &= lsn > 0 && !rs.wasNull() && !rs.getBoolean("revoked")
                                && rs.getLong("inferences") == 0 && rs.getLong("earned") == 0;
                    }
                }
                check("PreparedStatement SELECT returns 10 rows", rows == 10, "(" + rows + " rows)");
                check("getLong/getBoolean values", typesOk, "");
                check("content_hash round trip", sha256(run + "-c0").equals(firstHash), "(got " + firstHash + ")");
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT contributions, owner FROM datanets WHERE datanet = ?")) {
                ps.setString(1, dn);
                try (ResultSet rs = ps.executeQuery()) {
                    boolean ok = rs.next() && rs.getLong(1) == 10 && "alice".equals(rs.getString(2));
                    check("datanets.contributions counts the inserts", ok, "");
                }
            }
        });

        section("metadata", () -> {
            DatabaseMetaData md = conn.getMetaData();
            check("getDatabaseProductName", md.getDatabaseProductName() != null, "");
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, null, "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            for (String t : new String[] {"datanets", "contributions", "models", "inferences", "revocations",
                                          "policies", "settlements"}) {
                check("getTables lists " + t, tables.contains(t), "(got " + tables + ")");
            }
            boolean found = false;
            try (ResultSet rs = md.getTables(null, null, "contributions", null)) {
                while (rs.next()) found |= "contributions".equals(rs.getString("TABLE_NAME"));
            }
            check("getTables(\"contributions\")", found, "");
            Map<String, Integer> cols = new HashMap<>();
            Map<String, String> typeNames = new HashMap<>();
            try (ResultSet rs = md.getColumns(null, null, "contributions", "%")) {
                while (rs.next()) {
                    cols.put(rs.getString("COLUMN_NAME"), rs.getInt("DATA_TYPE"));
                    typeNames.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
                }
            }
            for (String c : new String[] {"contribution", "datanet", "contributor", "content_hash", "lsn",
                                          "revoked", "revoked_lsn", "inferences", "earned"}) {
                check("getColumns has contributions." + c, cols.containsKey(c), "(got " + cols.keySet() + ")");
            }
            check("content_hash is a character type",
                  cols.get("content_hash") != null && (cols.get("content_hash") == Types.VARCHAR
                          || cols.get("content_hash") == Types.LONGVARCHAR),
                  "(" + typeNames.get("content_hash") + " " + cols.get("content_hash") + ")");
            check("lsn is BIGINT", Integer.valueOf(Types.BIGINT).equals(cols.get("lsn")),
                  "(" + typeNames.get("lsn") + " " + cols.get("lsn") + ")");
            check("revoked is boolean",
                  cols.get("revoked") != null && (cols.get("revoked") == Types.BIT || cols.get("revoked") == Types.BOOLEAN),
                  "(" + typeNames.get("revoked") + " " + cols.get("revoked") + ")");
        });

        // What a BI tool (DBeaver, Metabase) does on connect: schemas, types, then every table's
        // columns, keys and indexes.
        section("metadata walk", () -> {
            DatabaseMetaData md = conn.getMetaData();
            int schemas = 0;
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) schemas++;
            }
            check("getSchemas", schemas > 0, "");
            int types = 0;
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) types++;
            }
            check("getTypeInfo", types > 0, "");
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            check("getTables(public) lists the read-only tables too",
                  tables.contains("balances") && tables.contains("events") && tables.contains("attributions"),
                  "(got " + tables + ")");
            for (String t : tables) {
                int columns = 0;
                try (ResultSet rs = md.getColumns(null, "public", t, "%")) {
                    while (rs.next()) {
                        columns++;
                        rs.getString("TYPE_NAME");
                        rs.getInt("NULLABLE");
                    }
                }
                check("getColumns(" + t + ")", columns >= 2, "(" + columns + " columns)");
                try (ResultSet rs = md.getPrimaryKeys(null, "public", t)) {
                    check("getPrimaryKeys(" + t + ") is empty", !rs.next(), "");
                }
                try (ResultSet rs = md.getImportedKeys(null, "public", t)) {
                    check("getImportedKeys(" + t + ") is empty", !rs.next(), "");
                }
                try (ResultSet rs = md.getIndexInfo(null, "public", t, false, true)) {
                    check("getIndexInfo(" + t + ") is empty", !rs.next(), "");
                }
            }
        });

        section("refusals", () -> {
            expectError(conn, "UPDATE contributions", "25006",
                        "UPDATE contributions SET contributor = 'mallory' WHERE datanet = '" + dn + "'");
            expectError(conn, "DELETE FROM datanets", "25006", "DELETE FROM datanets WHERE datanet = '" + dn + "'");
            expectError(conn, "duplicate datanet", "23505",
                        "INSERT INTO datanets (datanet, owner) VALUES ('" + dn + "', 'mallory')");
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*) FROM contributions WHERE datanet = '" + dn
                                                + "' AND contributor = 'mallory'")) {
                check("refused UPDATE changed nothing", rs.next() && rs.getLong(1) == 0, "");
            }
        });

        section("transaction", () -> {
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO datanets (datanet, owner) VALUES (?, ?)")) {
                ps.setString(1, dn + "-tx");
                ps.setString(2, "tom");
                ps.executeUpdate();
                conn.commit();
                ps.setString(1, dn + "-rolled-back");
                ps.executeUpdate();
                conn.rollback();
            } finally {
                conn.setAutoCommit(true);
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT datanet FROM datanets WHERE datanet IN (?, ?)")) {
                ps.setString(1, dn + "-tx");
                ps.setString(2, dn + "-rolled-back");
                List<String> got = new ArrayList<>();
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) got.add(rs.getString(1));
                }
                check("commit visible, rollback not", got.size() == 1 && got.get(0).equals(dn + "-tx"), "(got " + got + ")");
            }
        });

        conn.close();
        System.out.println("Jdbc: " + passed + " passed, " + failures.size() + " failed");
        if (!failures.isEmpty()) {
            System.out.println("FAILED: " + String.join("; ", failures));
            System.exit(1);
        }
        System.out.println("ALL OK");
    }
}
