// SPDX-License-Identifier: GPL-2.0
/*
 * sysfs access for agent scenarios (see godvm_agent.h).
 *
 * Nothing mounts /sys in a guest without user space, and the agent runs
 * before init would. Rather than mounting sysfs into the root file system
 * (init_mount() is __init and would be visible to a later /init), the agent
 * keeps one private kernel-internal mount made with kern_mount(), which
 * sysfs allows (SB_KERNMOUNT skips the namespace permission check), and
 * opens files relative to its root with file_open_root_mnt().
 */
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/mount.h>
#include <linux/mutex.h>
#include <linux/namei.h>
#include <linux/path.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "godvm_agent.h"

static struct vfsmount *godvm_sysfs_mnt;
static DEFINE_MUTEX(godvm_sysfs_lock);

static struct vfsmount *godvm_sysfs(void)
{
	struct file_system_type *type;
	struct vfsmount *mnt;

	mutex_lock(&godvm_sysfs_lock);
	mnt = godvm_sysfs_mnt;
	if (!mnt) {
		type = get_fs_type("sysfs");
		mnt = type ? kern_mount(type) : ERR_PTR(-ENODEV);
		if (!IS_ERR(mnt))
			godvm_sysfs_mnt = mnt;
	}
	mutex_unlock(&godvm_sysfs_lock);
	return mnt;
}

/* "/sys/a/b", "/a/b" and "a/b" all name a/b below the sysfs root. */
static const char *godvm_rel(const char *path)
{
	if (!strncmp(path, "/sys/", 5))
		path += 5;
	while (*path == '/')
		path++;
	return path;
}

static struct file *godvm_open(const char *path, int flags)
{
	struct vfsmount *mnt = godvm_sysfs();

	if (IS_ERR(mnt))
		return ERR_CAST(mnt);
	return file_open_root_mnt(mnt, godvm_rel(path), flags, 0);
}

int godvm_sysfs_write(const char *path, const char *val)
{
	struct file *f;
	loff_t pos = 0;
	size_t len = strlen(val);
	ssize_t n;

	f = godvm_open(path, O_WRONLY);
	if (IS_ERR(f))
		return PTR_ERR(f);
	n = kernel_write(f, val, len, &pos);
	filp_close(f, NULL);
	if (n < 0)
		return n;
	return n == len ? 0 : -EIO;
}

int godvm_sysfs_printf(const char *path, const char *fmt, ...)
{
	va_list args;
	char *val;
	int ret;

	va_start(args, fmt);
	val = kvasprintf(GFP_KERNEL, fmt, args);
	va_end(args);
	if (!val)
		return -ENOMEM;
	ret = godvm_sysfs_write(path, val);
	kfree(val);
	return ret;
}

int godvm_sysfs_read(const char *path, char *buf, size_t len)
{
	struct file *f;
	loff_t pos = 0;
	size_t got = 0;
	ssize_t n;

	if (!len)
		return -EINVAL;
	f = godvm_open(path, O_RDONLY);
	if (IS_ERR(f))
		return PTR_ERR(f);
	while (got < len - 1) {
		n = kernel_read(f, buf + got, len - 1 - got, &pos);
		if (n < 0) {
			filp_close(f, NULL);
			return n;
		}
		if (n == 0)
			break;
		got += n;
	}
	filp_close(f, NULL);
	while (got && (buf[got - 1] == '\n' || buf[got - 1] == ' '))
		got--;
	buf[got] = '\0';
	return got;
}

int godvm_sysfs_read_u64(const char *path, u64 *val)
{
	char buf[32];
	int ret;

	ret = godvm_sysfs_read(path, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	return kstrtou64(buf, 0, val);
}

bool godvm_sysfs_exists(const char *path)
{
	struct vfsmount *mnt = godvm_sysfs();
	struct path p;

	if (IS_ERR(mnt))
		return false;
	if (vfs_path_lookup(mnt->mnt_root, mnt, godvm_rel(path), 0, &p))
		return false;
	path_put(&p);
	return true;
}

int godvm_sysfs_wait(const char *path, const char *want, unsigned int timeout_ms)
{
	char buf[128];
	unsigned int waited = 0;
	int ret;

	for (;;) {
		ret = godvm_sysfs_read(path, buf, sizeof(buf));
		if (ret >= 0 && !strcmp(buf, want))
			return 0;
		if (waited >= timeout_ms)
			return ret < 0 ? ret : -ETIMEDOUT;
		msleep(10);
		waited += 10;
	}
}
