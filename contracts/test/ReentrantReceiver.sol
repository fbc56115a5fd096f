// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC721Receiver} from "@openzeppelin/contracts/token/ERC721/IERC721Receiver.sol";

interface ITickets {
    function mintBatch(address[] calldata to, uint256[] calldata tokenIds) external;
    function transferFrom(address from, address to, uint256 tokenId) external;
    function safeTransferFrom(address from, address to, uint256 tokenId) external;
    function burn(uint256 tokenId) external;
}

/// @title Test only: a hostile receiver that re-enters the collection from `onERC721Received`.
/// @notice On receipt it tries to mint itself the same and another token, to move the received
/// token on and to burn it, swallowing each failure so the outer transfer still completes, and
/// records which attempts succeeded.
contract ReentrantReceiver is IERC721Receiver {
    address public accomplice;
    bool public mintSucceeded;
    bool public transferSucceeded;
    bool public burnSucceeded;
    uint256 public received;

    constructor(address accomplice_) {
        accomplice = accomplice_;
    }

    function onERC721Received(address, address, uint256 tokenId, bytes calldata) external returns (bytes4) {
        received += 1;
        ITickets tickets = ITickets(msg.sender);
        address[] memory to = new address[](2);
        uint256[] memory ids = new uint256[](2);
        to[0] = address(this);
        to[1] = address(this);
        ids[0] = tokenId;
        ids[1] = tokenId + 1_000_000;
        try tickets.mintBatch(to, ids) {
            mintSucceeded = true;
        } catch {}
        try tickets.safeTransferFrom(address(this), accomplice, tokenId) {
            transferSucceeded = true;
        } catch {}
        try tickets.burn(tokenId) {
            burnSucceeded = true;
        } catch {}
        return IERC721Receiver.onERC721Received.selector;
    }
}
