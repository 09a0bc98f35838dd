/* dlsym and dlvsym: a program that asks any handle for a function proxify hooks (connect,
 * getaddrinfo, sendto, ...) gets proxify's hook, not libc's (dlsym(dlopen("libc.so.6"),
 * "connect"), Python's ctypes.CDLL("libc.so.6").connect, dlvsym(..., "GLIBC_2.2.5")).
 *
 * The real dlsym/dlvsym are found without dlsym: in libc's own dynamic symbol table (GNU hash),
 * reached through dl_iterate_phdr. RTLD_NEXT look-ups are passed on as a tail call, so libc
 * sees the caller's return address and "next" keeps meaning "after the caller" (proxify's own
 * look-ups of the real functions, in real.rs, are such calls from inside libproxify).
 * For any other handle the result is replaced by proxify's definition of the same name when
 * the handle gave libc's definition; a symbol of another library (its own "connect") stays.
 *
 * What cannot be seen from here: system calls made without libc (inline `syscall`
 * instructions, io_uring); those need the supervisor mode. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef void *(*dlsym_fn)(void *, const char *);
typedef void *(*dlvsym_fn)(void *, const char *, const char *);

struct find {
    const char *name;
    void *found;
    uintptr_t libc_base;
};

static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (; *s; s++)
        h = (h << 5) + h + (unsigned char)*s;
    return h;
}

static int is_libc(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strcmp(base, "libc.so.6") == 0;
}

static int find_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    struct find *f = data;
    (void)size;
    if (!info->dlpi_name || !is_libc(info->dlpi_name))
        return 0;
    uintptr_t base = info->dlpi_addr;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(base + info->dlpi_phdr[i].p_vaddr);
    if (!dyn)
        return 0;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const uint32_t *gh = NULL;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        /* ld.so relocates these in place on most targets; not on some (then add the base). */
        uintptr_t p = d->d_un.d_ptr;
        if (p < base)
            p += base;
        if (d->d_tag == DT_SYMTAB)
            symtab = (const ElfW(Sym) *)p;
        else if (d->d_tag == DT_STRTAB)
            strtab = (const char *)p;
        else if (d->d_tag == DT_GNU_HASH)
            gh = (const uint32_t *)p;
    }
    if (!symtab || !strtab || !gh)
        return 0;
    uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_size = gh[2];
    if (nbuckets == 0)
        return 0;
    const ElfW(Addr) *bloom = (const ElfW(Addr) *)(gh + 4);
    const uint32_t *buckets = (const uint32_t *)(bloom + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t h = gnu_hash(f->name);
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset)
        return 1;
    for (;; i++) {
        uint32_t ch = chain[i - symoffset];
        const ElfW(Sym) *s = &symtab[i];
        if ((ch | 1) == (h | 1) && s->st_shndx != SHN_UNDEF && s->st_value != 0 &&
            strcmp(strtab + s->st_name, f->name) == 0) {
            f->found = (void *)(base + s->st_value);
            f->libc_base = base;
            return 1;
        }
        if (ch & 1)
            break;
    }
    return 1;
}

static void *libc_symbol(const char *name)
{
    struct find f = {name, NULL, 0};
    dl_iterate_phdr(find_cb, &f);
    return f.found;
}

static dlsym_fn real_dlsym(void)
{
    static dlsym_fn p;
    dlsym_fn r = __atomic_load_n(&p, __ATOMIC_ACQUIRE);
    if (!r) {
        r = (dlsym_fn)libc_symbol("dlsym");
        __atomic_store_n(&p, r, __ATOMIC_RELEASE);
    }
    return r;
}

static dlvsym_fn real_dlvsym(void)
{
    static dlvsym_fn p;
    dlvsym_fn r = __atomic_load_n(&p, __ATOMIC_ACQUIRE);
    if (!r) {
        r = (dlvsym_fn)libc_symbol("dlvsym");
        __atomic_store_n(&p, r, __ATOMIC_RELEASE);
    }
    return r;
}

/* The object (load base) an address belongs to, 0 if none. */
static void *object_of(const void *addr)
{
    Dl_info di;
    if (!addr || !dladdr(addr, &di))
        return NULL;
    return di.dli_fbase;
}

/* proxify's own definition of `name`, or NULL when proxify does not define it. */
static void *own_symbol(const char *name)
{
    static void *self;
    void *h = __atomic_load_n(&self, __ATOMIC_ACQUIRE);
    if (!h) {
        Dl_info di;
        if (!dladdr((void *)own_symbol, &di) || !di.dli_fname)
            return NULL;
        h = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
        if (!h)
            return NULL;
        __atomic_store_n(&self, h, __ATOMIC_RELEASE);
    }
    dlsym_fn real = real_dlsym();
    if (!real)
        return NULL;
    void *p = real(h, name);
    /* A handle's look-up covers its dependencies too: only our own object counts. */
    if (!p || object_of(p) != object_of((void *)own_symbol))
        return NULL;
    return p;
}

extern void proxify_dlsym_log(const char *name, const char *version);

/* `found` is what the handle gave for `name`: libc's definition is replaced by ours. */
static void *filter(const char *name, const char *version, void *found)
{
    if (!found || !name)
        return found;
    void *libc_obj = object_of((void *)real_dlsym());
    if (!libc_obj || object_of(found) != libc_obj)
        return found;
    void *ours = own_symbol(name);
    if (!ours)
        return found;
    proxify_dlsym_log(name, version);
    return ours;
}

void *dlsym(void *handle, const char *name)
{
    dlsym_fn real = real_dlsym();
    if (!real)
        return NULL;
    if (handle == RTLD_NEXT)
        return real(handle, name); /* a tail call: libc sees our caller */
    return filter(name, NULL, real(handle, name));
}

void *dlvsym(void *handle, const char *name, const char *version)
{
    dlvsym_fn real = real_dlvsym();
    if (!real)
        return NULL;
    if (handle == RTLD_NEXT)
        return real(handle, name, version); /* a tail call: libc sees our caller */
    return filter(name, version, real(handle, name, version));
}
