//! Tests against real `git` in temporary directories. Every git command here and in the
//! module runs with `GIT_CONFIG_GLOBAL=/dev/null` and `GIT_CONFIG_NOSYSTEM=1` (see
//! `git.rs`), and the test repository sets its own identity, so nothing depends on the
//! machine's git configuration.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

use super::*;

/// A repository with one commit on `main` (README), and a manager keeping worktrees in
/// `<repo>/.architect/worktrees`.
struct Fixture {
    _tmp: TempDir,
    repo: PathBuf,
    m: WorktreeManager,
}

fn git(dir: &Path, args: &[&str]) -> String {
    Git::new(dir)
        .args(args)
        .text()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "--quiet"]);
    git(&repo, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    git(&repo, &["config", "user.name", "Test"]);
    git(&repo, &["config", "user.email", "test@example.com"]);
    git(&repo, &["config", "commit.gpgsign", "false"]);
    commit_file(&repo, "README", "hello\n", "initial");
    let m = WorktreeManager::new(
        &repo,
        repo.join(".architect/worktrees"),
        "main",
        ["main", "dev", "qa", "prod"].map(String::from).to_vec(),
    );
    Fixture { _tmp: tmp, repo, m }
}

fn commit_file(dir: &Path, name: &str, content: &str, msg: &str) -> String {
    fs::write(dir.join(name), content).unwrap();
    git(dir, &["add", name]);
    git(dir, &["commit", "--quiet", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

fn branch_exists(repo: &Path, branch: &str) -> bool {
    Git::new(repo)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{branch}"))
        .query()
        .unwrap()
        .is_some()
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap()
}

#[test]
fn prepare_creates_a_worktree_and_branch_then_is_idempotent() {
    let f = fixture();
    let p = f.m.prepare("s1", None).unwrap();
    assert_eq!(p.path, canonical(&f.m.session_path("s1")));
    assert_eq!(p.branch, "architect/s1");
    assert!(p.created_worktree && p.created_branch);
    assert_eq!((p.switched_from.clone(), p.saved.clone()), (None, None));
    assert_eq!(
        fs::read_to_string(p.path.join("README")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        git(&p.path, &["symbolic-ref", "--short", "HEAD"]),
        "architect/s1"
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.m.dir), 0o700);
    assert_eq!(mode(&p.path), 0o700);
    // The main checkout does not see the worktrees as untracked files.
    assert_eq!(
        git(&f.repo, &["status", "--porcelain", "--untracked-files=all"]),
        ""
    );

    let again = f.m.prepare("s1", None).unwrap();
    assert!(!again.created_worktree && !again.created_branch);
    assert_eq!(again.path, p.path);
    let exclude = fs::read_to_string(f.repo.join(".git/info/exclude")).unwrap();
    assert_eq!(
        exclude.matches("/.architect/worktrees/").count(),
        1,
        "{exclude}"
    );

    let st = f.m.status("s1").unwrap().unwrap();
    assert_eq!(st.branch.as_deref(), Some("architect/s1"));
    assert_eq!(st.head, Some(git(&f.repo, &["rev-parse", "main"])));
    assert_eq!((st.dirty_files, st.broken), (0, false));
    assert_eq!(f.m.status("nobody").unwrap(), None);
}

#[test]
fn prepare_checks_out_an_existing_branch() {
    let f = fixture();
    git(&f.repo, &["checkout", "--quiet", "-b", "feature/x"]);
    let tip = commit_file(&f.repo, "x.txt", "x\n", "x");
    git(&f.repo, &["checkout", "--quiet", "main"]);
    let p = f.m.prepare("s1", Some("feature/x")).unwrap();
    assert!(p.created_worktree && !p.created_branch);
    assert_eq!(git(&p.path, &["rev-parse", "HEAD"]), tip);
    assert!(p.path.join("x.txt").exists());
}

#[test]
fn one_session_per_branch() {
    let f = fixture();
    let p1 = f.m.prepare("s1", Some("feature/y")).unwrap();
    match f.m.prepare("s2", Some("feature/y")) {
        Err(Error::BranchBusy { branch, worktree }) => {
            assert_eq!((branch.as_str(), worktree), ("feature/y", p1.path));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !f.m.session_path("s2").exists(),
        "nothing was created for s2"
    );
    // The main checkout counts too (with `main` not protected here).
    let open = WorktreeManager {
        protected: Vec::new(),
        ..f.m.clone()
    };
    match open.prepare("s3", Some("main")) {
        Err(Error::BranchBusy { worktree, .. }) => assert_eq!(worktree, canonical(&f.repo)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn protected_and_invalid_branches_are_refused_before_anything_is_made() {
    let f = fixture();
    for (branch, protected) in [
        ("main", true),
        ("PROD", true),
        ("refs/heads/main", false),
        ("bad..name", false),
    ] {
        let e = f.m.prepare("s1", Some(branch)).unwrap_err();
        assert_eq!(matches!(e, Error::ProtectedBranch(_)), protected, "{e}");
        assert!(protected || matches!(e, Error::InvalidBranch { .. }), "{e}");
    }
    assert!(f.m.prepare("../x", None).is_err());
    assert!(!f.m.session_path("s1").exists());
}

#[test]
fn switching_branch_commits_uncommitted_work_onto_the_old_branch() {
    let f = fixture();
    commit_file(&f.repo, ".gitignore", "*.o\n", "ignore objects");
    let p = f.m.prepare("s1", Some("task-a")).unwrap();
    let before = git(&p.path, &["rev-parse", "HEAD"]);
    fs::write(p.path.join("README"), "changed\n").unwrap();
    fs::write(p.path.join("new.txt"), "untracked\n").unwrap();
    fs::create_dir(p.path.join("sub")).unwrap();
    fs::write(p.path.join("sub/staged.txt"), "staged\n").unwrap();
    git(&p.path, &["add", "sub/staged.txt"]);
    fs::write(p.path.join("build.o"), "ignored\n").unwrap();
    assert_eq!(f.m.status("s1").unwrap().unwrap().dirty_files, 3);

    let q = f.m.prepare("s1", Some("task-b")).unwrap();
    assert_eq!(q.switched_from.as_deref(), Some("task-a"));
    assert!(q.created_branch && !q.created_worktree);
    let saved = q.saved.expect("work saved");
    assert_eq!(
        (
            saved.session.as_str(),
            saved.branch.as_str(),
            saved.new_branch
        ),
        ("s1", "task-a", false)
    );
    assert_eq!(git(&f.repo, &["rev-parse", "task-a"]), saved.commit);
    assert_eq!(git(&f.repo, &["rev-parse", "task-a^"]), before);
    for (file, content) in [
        ("README", "changed"),
        ("new.txt", "untracked"),
        ("sub/staged.txt", "staged"),
    ] {
        assert_eq!(git(&f.repo, &["show", &format!("task-a:{file}")]), content);
    }
    assert!(git(&f.repo, &["ls-tree", "--name-only", "task-a"])
        .lines()
        .all(|l| l != "build.o"));
    assert_eq!(
        git(
            &f.repo,
            &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "task-a"]
        ),
        "architect <architect@localhost>|architect <architect@localhost>|\
         architect: work saved from worktree of session s1"
    );
    // Now on task-b, clean; the ignored file stays.
    let st = f.m.status("s1").unwrap().unwrap();
    assert_eq!((st.branch.as_deref(), st.dirty_files), (Some("task-b"), 0));
    assert_eq!(
        fs::read_to_string(p.path.join("README")).unwrap(),
        "hello\n"
    );
    assert!(!p.path.join("new.txt").exists());
    assert!(p.path.join("build.o").exists());
    // Back on task-a, the work is there.
    let r = f.m.prepare("s1", Some("task-a")).unwrap();
    assert_eq!(r.saved, None);
    assert_eq!(
        fs::read_to_string(p.path.join("new.txt")).unwrap(),
        "untracked\n"
    );
}

#[test]
fn a_merge_left_in_conflict_is_saved_and_abandoned() {
    let f = fixture();
    git(&f.repo, &["branch", "other"]);
    let p = f.m.prepare("s1", Some("task-a")).unwrap();
    commit_file(&p.path, "README", "ours\n", "ours");
    git(&f.repo, &["checkout", "--quiet", "other"]);
    commit_file(&f.repo, "README", "theirs\n", "theirs");
    git(&f.repo, &["checkout", "--quiet", "main"]);
    let (out, _) = Git::new(&p.path).args(["merge", "other"]).output().unwrap();
    assert!(!out.success(), "the merge conflicts");

    let q = f.m.prepare("s1", Some("task-b")).unwrap();
    let saved = q.saved.unwrap();
    let readme = git(&f.repo, &["show", &format!("{}:README", saved.commit)]);
    assert!(
        readme.contains("<<<<<<<") && readme.contains("theirs"),
        "{readme}"
    );
    assert_eq!(git(&p.path, &["status", "--porcelain"]), "");
    assert!(!f.repo.join(".git/worktrees/s1/MERGE_HEAD").exists());
}

#[test]
fn a_rebase_left_in_conflict_is_saved_and_abandoned_leaving_the_branch_as_it_was() {
    let f = fixture();
    let p = f.m.prepare("s1", Some("task-a")).unwrap();
    let tip = commit_file(&p.path, "README", "task-a\n", "task-a edit");
    commit_file(&f.repo, "README", "main moved\n", "main edit");
    let (out, _) = Git::new(&p.path).args(["rebase", "main"]).output().unwrap();
    assert!(!out.success(), "the rebase conflicts");

    let q = f.m.prepare("s1", Some("task-b")).unwrap();
    let saved = q.saved.unwrap();
    assert!(
        saved.new_branch,
        "a rebase runs on a detached HEAD: {saved:?}"
    );
    let readme = git(&f.repo, &["show", &format!("{}:README", saved.commit)]);
    assert!(readme.contains("<<<<<<<"), "{readme}");
    assert_eq!(
        git(&f.repo, &["rev-parse", "task-a"]),
        tip,
        "task-a untouched"
    );
    assert!(!f.repo.join(".git/worktrees/s1/rebase-merge").exists());
    assert_eq!(git(&p.path, &["status", "--porcelain"]), "");
    f.m.prepare("s1", Some("task-a")).unwrap();
    assert_eq!(
        fs::read_to_string(p.path.join("README")).unwrap(),
        "task-a\n"
    );
}

#[test]
fn a_detached_commit_no_branch_holds_gets_a_branch() {
    let f = fixture();
    let p = f.m.prepare("s1", None).unwrap();
    git(&p.path, &["checkout", "--quiet", "--detach"]);
    let lonely = commit_file(&p.path, "d.txt", "detached\n", "detached work");
    let q = f.m.prepare("s1", None).unwrap();
    assert_eq!(q.switched_from.as_deref(), Some(lonely.as_str()));
    let saved = q.saved.unwrap();
    assert!(saved.new_branch);
    assert!(
        saved.branch.starts_with("architect-saved/s1-"),
        "{}",
        saved.branch
    );
    assert_eq!(saved.commit, lonely);
    assert_eq!(git(&f.repo, &["rev-parse", &saved.branch]), lonely);
    // Detached on a commit a branch holds, and clean: nothing to save.
    git(&p.path, &["checkout", "--quiet", "--detach", "main"]);
    assert_eq!(f.m.prepare("s1", None).unwrap().saved, None);
}

#[test]
fn work_on_a_protected_branch_is_saved_elsewhere() {
    let f = fixture();
    git(&f.repo, &["branch", "dev"]);
    let p = f.m.prepare("s1", None).unwrap();
    git(&p.path, &["checkout", "--quiet", "dev"]); // by hand, behind architect's back
    fs::write(p.path.join("oops.txt"), "work\n").unwrap();
    let dev = git(&f.repo, &["rev-parse", "dev"]);
    let q = f.m.prepare("s1", None).unwrap();
    let saved = q.saved.unwrap();
    assert!(saved.new_branch && saved.branch.starts_with("architect-saved/"));
    assert_eq!(git(&f.repo, &["rev-parse", "dev"]), dev, "dev did not move");
    assert_eq!(
        git(&f.repo, &["show", &format!("{}:oops.txt", saved.branch)]),
        "work"
    );
}

#[test]
fn reconcile_saves_and_removes_orphans_and_deletes_empty_branches() {
    let f = fixture();
    let clean = f.m.prepare("s1", None).unwrap().path;
    let dirty = f.m.prepare("s2", None).unwrap().path;
    fs::write(dirty.join("wip.txt"), "half done\n").unwrap();
    let live = f.m.prepare("s3", None).unwrap().path;
    fs::write(live.join("keep.txt"), "mine\n").unwrap();
    git(&f.repo, &["branch", "architect/s4"]); // empty, no worktree
    git(&f.repo, &["checkout", "--quiet", "-b", "architect/s5"]);
    commit_file(&f.repo, "s5.txt", "s5\n", "s5 work"); // has commits
    git(&f.repo, &["checkout", "--quiet", "main"]);
    git(&f.repo, &["branch", "unrelated"]);

    let r = f.m.reconcile(&["s3".into()]).unwrap();
    let mut removed = r.removed.clone();
    removed.sort();
    assert_eq!(removed, [clean.clone(), dirty.clone()]);
    assert!(!clean.exists() && !dirty.exists());
    assert_eq!(r.saved.len(), 1);
    let saved = &r.saved[0];
    assert_eq!(
        (
            saved.session.as_str(),
            saved.branch.as_str(),
            saved.new_branch
        ),
        ("s2", "architect/s2", false)
    );
    assert_eq!(
        git(&f.repo, &["show", "architect/s2:wip.txt"]),
        "half done",
        "the work is findable on its branch"
    );
    let mut deleted = r.deleted_branches.clone();
    deleted.sort();
    assert_eq!(deleted, ["architect/s1", "architect/s4"]);
    for kept in [
        "architect/s2",
        "architect/s3",
        "architect/s5",
        "unrelated",
        "main",
    ] {
        assert!(branch_exists(&f.repo, kept), "{kept}");
    }
    assert_eq!(fs::read_to_string(live.join("keep.txt")).unwrap(), "mine\n");
    assert!(r.failed.is_empty(), "{:?}", r.failed);

    let again = f.m.reconcile(&["s3".into()]).unwrap();
    assert!(!again.changed(), "{again:?}");
    assert_eq!(again, Reconciled::default());
}

#[test]
fn a_worktree_directory_deleted_behind_gits_back_is_pruned() {
    let f = fixture();
    let p = f.m.prepare("s1", None).unwrap().path;
    fs::remove_dir_all(&p).unwrap();
    assert!(f.m.status("s1").unwrap().unwrap().broken);
    let r = f.m.reconcile(&["s1".into()]).unwrap();
    assert_eq!(r.pruned, std::slice::from_ref(&p));
    assert!(!f.repo.join(".git/worktrees/s1").exists());
    // Its branch had nothing beyond main and no worktree any more.
    assert_eq!(r.deleted_branches, ["architect/s1"]);
    let q = f.m.prepare("s1", None).unwrap();
    assert!(q.created_worktree && q.created_branch);
    assert!(!f.m.reconcile(&["s1".into()]).unwrap().changed());
}

#[test]
fn prepare_recovers_from_a_deleted_directory_without_reconcile() {
    let f = fixture();
    let p = f.m.prepare("s1", None).unwrap().path;
    fs::remove_dir_all(&p).unwrap();
    let q = f.m.prepare("s1", None).unwrap();
    assert!(q.created_worktree);
    assert_eq!(
        git(&p, &["symbolic-ref", "--short", "HEAD"]),
        "architect/s1"
    );
}

/// What `git worktree add` leaves when killed before its checkout: the administrative
/// directory locked `initializing`, the `.git` file, no files.
fn simulate_killed_add(f: &Fixture, session: &str) -> PathBuf {
    let p = f.m.prepare(session, None).unwrap().path;
    fs::write(
        f.repo.join(format!(".git/worktrees/{session}/locked")),
        "initializing",
    )
    .unwrap();
    fs::remove_file(f.repo.join(format!(".git/worktrees/{session}/index"))).unwrap();
    for e in fs::read_dir(&p).unwrap() {
        let e = e.unwrap();
        if e.file_name() != ".git" {
            fs::remove_file(e.path()).unwrap();
        }
    }
    p
}

#[test]
fn a_killed_worktree_add_is_cleaned_up() {
    let f = fixture();
    let p = simulate_killed_add(&f, "s1");
    let r = f.m.reconcile(&["s1".into()]).unwrap();
    assert_eq!(r.half_created, std::slice::from_ref(&p));
    assert!(
        r.saved.is_empty(),
        "nothing ran there, nothing to save: {r:?}"
    );
    assert!(!p.exists());
    let q = f.m.prepare("s1", None).unwrap();
    assert!(q.created_worktree);
    assert!(p.join("README").exists());
    // prepare alone copes too.
    let p2 = simulate_killed_add(&f, "s2");
    assert!(f.m.prepare("s2", None).unwrap().created_worktree);
    assert!(p2.join("README").exists());
}

/// Kills (SIGKILL, whole process group) a real `git worktree add` in the middle of its
/// checkout, held there by a smudge filter that sleeps while `slow` exists.
fn kill_a_real_worktree_add(f: &Fixture, session: &str) -> PathBuf {
    use std::os::unix::process::CommandExt;
    let slow = f.repo.parent().unwrap().join("slow");
    fs::write(&slow, "").unwrap();
    let filter = format!("test -e '{}' && sleep 5; cat", slow.display());
    git(&f.repo, &["config", "filter.slow.smudge", &filter]);
    git(&f.repo, &["branch", "--force", "slow-branch", "main"]);
    fs::create_dir_all(&f.m.dir).unwrap();
    let path = canonical(&f.m.dir).join(session);
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(&f.repo)
        .args(["worktree", "add", "--quiet"])
        .arg(&path)
        .arg("slow-branch")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // .gitattributes is checked out first (unfiltered), then the filter holds README.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !path.join(".gitattributes").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "git worktree add never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pgid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the process group we just started.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child.wait().unwrap();
    fs::remove_file(&slow).unwrap();
    let admin = f.repo.join(".git/worktrees").join(session);
    let locked = fs::read_to_string(admin.join("locked")).unwrap();
    assert_eq!(locked.trim_end(), "initializing");
    path
}

#[test]
fn a_really_killed_worktree_add_is_cleaned_up() {
    let f = fixture();
    fs::write(f.repo.join(".gitattributes"), "README filter=slow\n").unwrap();
    git(&f.repo, &["add", ".gitattributes"]);
    git(&f.repo, &["commit", "--quiet", "-m", "slow README"]);
    let p = kill_a_real_worktree_add(&f, "s1");
    let r = f.m.reconcile(&["s1".into()]).unwrap();
    assert_eq!(r.half_created, std::slice::from_ref(&p), "{r:?}");
    // git was killed inside its checkout, which holds the worktree's index.lock.
    assert_eq!(r.stale_locks.len(), 1, "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    assert!(!p.exists());
    let q = f.m.prepare("s1", None).unwrap();
    assert!(q.created_worktree);
    assert_eq!(fs::read_to_string(p.join("README")).unwrap(), "hello\n");
    assert!(!f.m.reconcile(&["s1".into()]).unwrap().changed());
    // prepare alone copes too, stale index.lock and all.
    let p2 = kill_a_real_worktree_add(&f, "s2");
    assert!(f.m.prepare("s2", None).unwrap().created_worktree);
    assert_eq!(fs::read_to_string(p2.join("README")).unwrap(), "hello\n");
}

#[test]
fn leftover_directories_are_cleared_or_moved_aside_never_deleted_with_files() {
    let f = fixture();
    fs::create_dir_all(f.m.session_path("empty")).unwrap();
    fs::create_dir_all(f.m.session_path("only-dotgit")).unwrap();
    fs::write(
        f.m.session_path("only-dotgit").join(".git"),
        "gitdir: /nowhere\n",
    )
    .unwrap();
    let foreign = f.m.session_path("foreign");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "not architect's\n").unwrap();
    // A worktree of this repository whose registration was deleted by hand, with work.
    let lost = f.m.prepare("lost", None).unwrap().path;
    fs::write(lost.join("work.txt"), "precious\n").unwrap();
    fs::remove_dir_all(f.repo.join(".git/worktrees/lost")).unwrap();

    let r = f.m.reconcile(&["empty".into(), "foreign".into()]).unwrap();
    let dir = canonical(&f.m.dir);
    let mut cleared = r.cleared.clone();
    cleared.sort();
    assert_eq!(cleared, [dir.join("empty"), dir.join("only-dotgit")]);
    assert_eq!(r.moved_aside.len(), 1);
    let (from, to) = &r.moved_aside[0];
    assert_eq!(from, &lost);
    assert!(to.starts_with(dir.join(".orphaned")));
    assert_eq!(
        fs::read_to_string(to.join("work.txt")).unwrap(),
        "precious\n"
    );
    assert_eq!(r.left_alone.len(), 1, "{:?}", r.left_alone);
    assert_eq!(r.left_alone[0].0, canonical(&foreign));
    assert!(foreign.join("notes.txt").exists());
    // A session whose path holds someone's files is refused, the files kept.
    match f.m.prepare("foreign", None) {
        Err(Error::Worktree { path, .. }) => assert_eq!(path, canonical(&foreign)),
        other => panic!("{other:?}"),
    }
    assert!(foreign.join("notes.txt").exists());
    // The empty one works now.
    assert!(f.m.prepare("empty", None).unwrap().created_worktree);
}

#[test]
fn stale_lock_files_are_removed_at_start_up() {
    let f = fixture();
    let p = f.m.prepare("s1", None).unwrap().path;
    let lock = f.repo.join(".git/worktrees/s1/index.lock");
    fs::write(&lock, "").unwrap();
    let e = f.m.prepare("s1", Some("other")).unwrap_err();
    assert!(e.to_string().contains("index.lock"), "{e}");
    let r = f.m.reconcile(&["s1".into()]).unwrap();
    assert_eq!(
        r.stale_locks,
        [canonical(lock.parent().unwrap()).join("index.lock")]
    );
    assert!(!lock.exists());
    f.m.prepare("s1", Some("other")).unwrap();
    assert_eq!(git(&p, &["symbolic-ref", "--short", "HEAD"]), "other");
}

#[test]
fn a_worktree_someone_locked_is_left_alone() {
    let f = fixture();
    let p = f.m.prepare("s1", None).unwrap().path;
    Git::new(&f.repo)
        .args(["worktree", "lock", "--reason", "on a usb disk"])
        .arg(&p)
        .run()
        .unwrap();
    let r = f.m.reconcile(&[]).unwrap();
    assert!(p.exists());
    assert_eq!(r.left_alone.len(), 1, "{r:?}");
    assert!(r.left_alone[0].1.contains("on a usb disk"));
    assert!(r.removed.is_empty());
}

#[test]
fn a_failed_prepare_deletes_the_branch_it_created() {
    let f = fixture();
    let foreign = f.m.session_path("s1");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "x").unwrap();
    assert!(f.m.prepare("s1", Some("fresh")).is_err());
    assert!(!branch_exists(&f.repo, "fresh"));
}

#[test]
fn the_worktrees_directory_must_be_a_directory_of_its_own() {
    let f = fixture();
    for dir in [
        f.repo.clone(),
        f.repo.join(".git/wt"),
        f.repo.parent().unwrap().to_path_buf(),
    ] {
        let m = WorktreeManager { dir, ..f.m.clone() };
        assert!(matches!(m.prepare("s1", None), Err(Error::Worktree { .. })));
        assert!(matches!(m.reconcile(&[]), Err(Error::Worktree { .. })));
    }
    // Outside the repository is fine, and nothing is written to info/exclude.
    let outside = WorktreeManager {
        dir: f.repo.parent().unwrap().join("wts"),
        ..f.m.clone()
    };
    outside.prepare("s1", None).unwrap();
    let exclude = fs::read_to_string(f.repo.join(".git/info/exclude")).unwrap_or_default();
    assert!(!exclude.contains("architect"));
}

#[test]
fn a_missing_base_or_repository_is_a_clear_error() {
    let f = fixture();
    let m = WorktreeManager {
        base: "trunk".into(),
        ..f.m.clone()
    };
    let e = m.prepare("s1", None).unwrap_err().to_string();
    assert!(e.contains("\"trunk\"") && e.contains("base_branch"), "{e}");
    let nowhere = tempfile::tempdir().unwrap();
    let m = WorktreeManager {
        repo: nowhere.path().to_path_buf(),
        dir: nowhere.path().join("wt"),
        ..f.m.clone()
    };
    let e = m.prepare("s1", None).unwrap_err();
    assert!(matches!(e, Error::Git { .. }), "{e}");
    assert!(e.to_string().contains("not a git repository"), "{e}");
    assert!(!nowhere.path().join("wt").exists(), "nothing created");
    let typo = nowhere.path().join("typo");
    let m = WorktreeManager::from_settings(&typo, &crate::worktree::GitSettings::default());
    let e = m.reconcile(&[]).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(!typo.exists(), "nothing created");
    assert_eq!(m.status("s1").unwrap_err().to_string(), e.to_string());
}

#[test]
fn settings_place_worktrees_relative_to_the_repository() {
    let git = crate::worktree::GitSettings::default();
    let m = WorktreeManager::from_settings(Path::new("/r"), &git);
    assert_eq!(m.dir, Path::new("/r/.architect/worktrees"));
    assert_eq!(
        m.session_path("s1"),
        Path::new("/r/.architect/worktrees/s1")
    );
    assert_eq!((m.base.as_str(), m.protected.len()), ("main", 4));
    let absolute = crate::worktree::GitSettings {
        worktrees_dir: PathBuf::from("/srv/wt"),
        ..git
    };
    let m = WorktreeManager::from_settings(Path::new("/r"), &absolute);
    assert_eq!(m.session_path("s1"), Path::new("/srv/wt/s1"));
}

#[test]
fn validate_branch_agrees_with_git_check_ref_format() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "feature",
        "a/b",
        "v1.0",
        "with@sign",
        "ünï",
        "x/-y",
        "a.lockx",
        "-x",
        ".x",
        "a/.x",
        "x.lock",
        "a..b",
        "a b",
        "a~b",
        "a^b",
        "a:b",
        "a?b",
        "a*b",
        "a[b",
        "a\\b",
        "a@{b",
        "/a",
        "a/",
        "a//b",
        "a.",
        "HEAD",
        "tab\tx",
    ] {
        let (out, _) = Git::new(dir.path())
            .args(["check-ref-format", "--branch", name])
            .output()
            .unwrap();
        assert_eq!(
            validate_branch(name, &[]).is_ok(),
            out.success(),
            "{name:?}: git says {}",
            out.stderr
        );
    }
}
