using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring;

/// <summary>
/// A chain of buffers the device popped from a queue, fully validated: every descriptor was read once, checked
/// against the spec's rules and translated to host memory before the chain was handed out. Device-readable
/// buffers come first, then device-writable ones (2.7.4.2).
/// <para>
/// The chain lives in the queue's private memory and is valid until the next pop from the same queue. To keep a
/// chain longer (a stats request held for later, say), keep its <see cref="Id"/> and its buffers' addresses from
/// <see cref="GetRange"/>, and translate them again through <see cref="GuestMemory"/> when needed.
/// </para>
/// <para>
/// The descriptors are a private copy, but the buffers' bytes are guest memory, which the guest can rewrite at
/// any moment: a device that validates a request header should copy it out (<see cref="CopyReadableTo"/>) and
/// use the copy, not read the span twice.
/// </para>
/// </summary>
/// <example>
/// <code>
/// while (queue.TryPop(out DescriptorChain chain))
/// {
///     foreach (ReadOnlySpan&lt;byte&gt; request in chain.Readable) { /* parse */ }
///     int written = chain.CopyToWritable(response);
///     queue.PushUsed(chain.Id, (uint)written);
/// }
/// if (queue.PublishUsed()) { RaiseInterrupt(); }
/// </code>
/// </example>
public readonly ref struct DescriptorChain
{
    private readonly ReadOnlySpan<ChainSegmentRecord> _segments;
    private readonly GuestMemory? _memory; // rebuilds guest addresses from the records (GetRange)
    private readonly int _readableCount;

    internal DescriptorChain(ushort id, ReadOnlySpan<ChainSegmentRecord> segments, GuestMemory memory, int readableCount, uint readableLength, uint writableLength)
    {
        Debug.Assert((uint)readableCount <= (uint)segments.Length, "readable segments are a prefix of the chain");
        Id = id;
        _segments = segments;
        _memory = memory;
        _readableCount = readableCount;
        ReadableLength = readableLength;
        WritableLength = writableLength;
    }

    /// <summary>
    /// The value that identifies the chain when it is returned with <c>PushUsed</c>: the head descriptor index
    /// for a split ring.
    /// </summary>
    public ushort Id { get; }

    /// <summary>Number of buffers (data descriptors) in the chain, indirect ones included.</summary>
    public int SegmentCount => _segments.Length;

    /// <summary>Number of device-readable buffers.</summary>
    public int ReadableCount => _readableCount;

    /// <summary>Number of device-writable buffers.</summary>
    public int WritableCount => _segments.Length - _readableCount;

    /// <summary>Total bytes of the device-readable buffers.</summary>
    public uint ReadableLength { get; }

    /// <summary>Total bytes of the device-writable buffers.</summary>
    public uint WritableLength { get; }

    /// <summary>The device-readable buffers, in chain order.</summary>
    public ReadableSegments Readable => new(_segments.Slice(0, _readableCount));

    /// <summary>The device-writable buffers, in chain order.</summary>
    public WritableSegments Writable => new(_segments.Slice(_readableCount));

    /// <summary>Device-readable buffer <paramref name="index"/> (0 .. <see cref="ReadableCount"/> - 1).</summary>
    public ReadOnlySpan<byte> GetReadable(int index)
    {
        if ((uint)index >= (uint)_readableCount)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(index), "No such readable buffer.");
        }

        return AsSpan(_segments[index]);
    }

    /// <summary>Device-writable buffer <paramref name="index"/> (0 .. <see cref="WritableCount"/> - 1).</summary>
    public Span<byte> GetWritable(int index)
    {
        if ((uint)index >= (uint)WritableCount)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(index), "No such writable buffer.");
        }

        return AsSpan(_segments[_readableCount + index]);
    }

    /// <summary>Guest physical range of buffer <paramref name="index"/> in chain order (readable first).</summary>
    public unsafe GuestRange GetRange(int index)
    {
        if ((uint)index >= (uint)_segments.Length)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(index), "No such buffer.");
        }

        ChainSegmentRecord s = _segments[index];
        return new GuestRange(_memory!.GuestAddressOf(s.Region, s.Host), (uint)s.Length);
    }

    /// <summary>True when buffer <paramref name="index"/> in chain order is device-writable.</summary>
    public bool IsWritable(int index) => index >= _readableCount && index < _segments.Length;

    /// <summary>
    /// Gathers the device-readable bytes into <paramref name="destination"/>, stopping when it is full.
    /// Returns the number of bytes copied.
    /// </summary>
    public int CopyReadableTo(Span<byte> destination)
    {
        int copied = 0;
        foreach (ReadOnlySpan<byte> source in Readable)
        {
            int n = Math.Min(source.Length, destination.Length - copied);
            source.Slice(0, n).CopyTo(destination.Slice(copied));
            copied += n;
            if (copied == destination.Length)
            {
                break;
            }
        }

        return copied;
    }

    /// <summary>
    /// Scatters <paramref name="source"/> over the device-writable buffers, stopping when they are full.
    /// Returns the number of bytes written (the value to report as the used length).
    /// </summary>
    public int CopyToWritable(ReadOnlySpan<byte> source)
    {
        int written = 0;
        foreach (Span<byte> destination in Writable)
        {
            int n = Math.Min(destination.Length, source.Length - written);
            source.Slice(written, n).CopyTo(destination);
            written += n;
            if (written == source.Length)
            {
                break;
            }
        }

        return written;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Span<byte> AsSpan(in ChainSegmentRecord s) =>
        MemoryMarshal.CreateSpan(ref Unsafe.AsRef<byte>(s.Host), s.Length); // Length was validated non-negative

    /// <summary>Enumerates a chain's device-readable buffers as read-only spans.</summary>
    public readonly ref struct ReadableSegments
    {
        private readonly ReadOnlySpan<ChainSegmentRecord> _segments;

        internal ReadableSegments(ReadOnlySpan<ChainSegmentRecord> segments) => _segments = segments;

        /// <summary>Number of buffers.</summary>
        public int Count => _segments.Length;

        /// <summary>Returns the enumerator (for <c>foreach</c>).</summary>
        public Enumerator GetEnumerator() => new(_segments);

        /// <summary>Enumerator over device-readable buffers.</summary>
        public ref struct Enumerator
        {
            private readonly ReadOnlySpan<ChainSegmentRecord> _segments;
            private int _index;

            internal Enumerator(ReadOnlySpan<ChainSegmentRecord> segments)
            {
                _segments = segments;
                _index = -1;
            }

            /// <summary>The current buffer.</summary>
            public readonly ReadOnlySpan<byte> Current => AsSpan(_segments[_index]);

            /// <summary>Advances to the next buffer.</summary>
            public bool MoveNext() => ++_index < _segments.Length;
        }
    }

    /// <summary>Enumerates a chain's device-writable buffers as writable spans.</summary>
    public readonly ref struct WritableSegments
    {
        private readonly ReadOnlySpan<ChainSegmentRecord> _segments;

        internal WritableSegments(ReadOnlySpan<ChainSegmentRecord> segments) => _segments = segments;

        /// <summary>Number of buffers.</summary>
        public int Count => _segments.Length;

        /// <summary>Returns the enumerator (for <c>foreach</c>).</summary>
        public Enumerator GetEnumerator() => new(_segments);

        /// <summary>Enumerator over device-writable buffers.</summary>
        public ref struct Enumerator
        {
            private readonly ReadOnlySpan<ChainSegmentRecord> _segments;
            private int _index;

            internal Enumerator(ReadOnlySpan<ChainSegmentRecord> segments)
            {
                _segments = segments;
                _index = -1;
            }

            /// <summary>The current buffer.</summary>
            public readonly Span<byte> Current => AsSpan(_segments[_index]);

            /// <summary>Advances to the next buffer.</summary>
            public bool MoveNext() => ++_index < _segments.Length;
        }
    }
}
